"""The etcd requests built without a server: compares, nested candidates, ownership."""

from __future__ import annotations

import pytest
from aetcd import rpc

from reconciler.etcd import ops
from reconciler.etcd.watch import KV


def _txn(succeeded: bool, inner: rpc.TxnResponse | None = None) -> rpc.TxnResponse:
    responses = [rpc.ResponseOp(response_txn=inner)] if inner is not None else []
    return rpc.TxnResponse(succeeded=succeeded, responses=responses)


def test_first_absent_nests_each_next_candidate_in_the_failure_branch() -> None:
    req = ops.first_absent(["a", "b", "c"], "v", 7, {"x": "1"})
    seen = []
    while req is not None and req.compare:
        seen.append(req.compare[0].key)
        assert req.compare[0].target == rpc.Compare.CREATE
        puts = [op.request_put for op in req.success]
        assert [(p.key, p.value, p.lease) for p in puts] == [
            (req.compare[0].key, b"v", 7),
            (b"x", b"1", 0),
        ]
        req = req.failure[0].request_txn if req.failure else None
    assert seen == [b"a", b"b", b"c"]


def test_first_absent_of_nothing_is_no_request() -> None:
    assert ops.first_absent([], "v", 0, None) is None


@pytest.mark.parametrize(
    ("resp", "created"),
    [
        (_txn(True), "a"),
        (_txn(False, _txn(True)), "b"),
        (_txn(False, _txn(False, _txn(True))), "c"),
        (_txn(False, _txn(False, _txn(False))), None),
        (_txn(False), None),
    ],
)
def test_created_key_walks_the_nested_failures(resp: rpc.TxnResponse, created: str | None) -> None:
    assert ops.created_key(["a", "b", "c"], resp) == created


@pytest.mark.parametrize(
    ("kv", "ours"),
    [
        (KV(b"k", b"v", 3, 3, 7), True),
        (KV(b"k", b"v", 3, 3, 8), False),
        (KV(b"k", b"w", 3, 3, 7), False),
        (None, False),
    ],
)
def test_holds_only_our_value_under_our_lease(kv: KV | None, ours: bool) -> None:
    assert ops.holds(kv, "v", 7) is ours


def test_conditional_put_reads_the_key_when_the_compare_fails() -> None:
    req = ops.conditional_put("k", b"v", ops.at_revision("k", 5), 0, None)
    assert req.compare[0].mod_revision == 5
    assert req.compare[0].target == rpc.Compare.MOD
    assert req.success[0].request_put.key == b"k"
    assert req.failure[0].request_range.key == b"k"


def test_put_and_release_puts_on_both_branches_and_deletes_only_on_a_match() -> None:
    req = ops.put_and_release("k", "v", "slot", b"me")
    assert req.compare[0].value == b"me"
    assert req.compare[0].target == rpc.Compare.VALUE
    assert [op.WhichOneof("request") for op in req.success] == [
        "request_put",
        "request_delete_range",
    ]
    assert [op.WhichOneof("request") for op in req.failure] == ["request_put"]
    assert req.success[1].request_delete_range.key == b"slot"


def test_snapshot_request_reads_keys_then_prefix_ranges() -> None:
    req = ops.snapshot_request(["a"], ["p/"])
    ranges = [op.request_range for op in req.success]
    assert [(r.key, r.range_end) for r in ranges] == [(b"a", b""), (b"p/", b"p0")]
    assert not req.compare
