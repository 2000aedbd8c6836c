"""fold: a prefix's keys after each watch item, as `status --watch` and `wait` keep them."""

from __future__ import annotations

import pytest

from reconciler.etcd.watch import KV, Resynced, WatchEvent, fold


def kv(key: str, value: str = "v", rev: int = 1) -> KV:
    return KV(key.encode(), value.encode(), rev, 1, 0)


@pytest.mark.parametrize(
    ("before", "item", "after"),
    [
        ({}, WatchEvent("put", kv("a", "1"), 2), {b"a": kv("a", "1")}),
        ({b"a": kv("a", "1")}, WatchEvent("put", kv("a", "2", 3), 3), {b"a": kv("a", "2", 3)}),
        ({b"a": kv("a"), b"b": kv("b")}, WatchEvent("delete", kv("a", ""), 4), {b"b": kv("b")}),
        ({b"b": kv("b")}, WatchEvent("delete", kv("gone", ""), 5), {b"b": kv("b")}),
        ({b"a": kv("a"), b"b": kv("b")}, Resynced((kv("c"),), 9), {b"c": kv("c")}),
    ],
    ids=["put new", "put over", "delete", "delete unknown", "resync replaces all"],
)
def test_fold(before: dict[bytes, KV], item: WatchEvent | Resynced, after: dict[bytes, KV]) -> None:
    state = dict(before)
    assert fold(state, item) is state
    assert state == after
