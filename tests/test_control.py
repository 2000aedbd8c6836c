"""Control: the four etcd keys an agent acts on, folded one event at a time. Table tests:
each row is a sequence of (key, value) events and the values and change flags after it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from reconciler import keys
from reconciler.control import Control

P = "/sk"
D = keys.desired_revision(P).encode()
PAUSE = keys.node_pause(P, "n1").encode()
OTHER_PAUSE = keys.node_pause(P, "n2").encode()
FAILED = keys.rollout_failed(P).encode()
HALTED = keys.rollout_halted(P).encode()


def failed(rev: Any, node: str = "n2", error: str = "x.service failed") -> bytes:
    return json.dumps({"revision": rev, "node": node, "error": error}).encode()


# events, then: flags returned per event, and (desired, paused, failed_revision, halted)
CASES: list[tuple[str, list[tuple[bytes, bytes | None]], list[bool], tuple[Any, ...]]] = [
    ("nothing set", [(D, None), (PAUSE, None), (FAILED, None), (HALTED, None)],
     [False] * 4, (None, False, None, False)),
    ("desired set then same", [(D, b"abc\n"), (D, b"abc")], [True, False],
     ("abc", False, None, False)),
    ("desired blank is unset", [(D, b"abc"), (D, b"  ")], [True, True], (None, False, None, False)),
    ("desired deleted", [(D, b"abc"), (D, None)], [True, True], (None, False, None, False)),
    ("pause 1", [(PAUSE, b"1")], [True], (None, True, None, False)),
    ("pause empty value is off", [(PAUSE, b"")], [False], (None, False, None, False)),
    ("pause false/0/FALSE are off", [(PAUSE, b"false"), (PAUSE, b"0"), (PAUSE, b"FALSE")],
     [False, False, False], (None, False, None, False)),
    ("pause then deleted", [(PAUSE, b"yes"), (PAUSE, None)], [True, True],
     (None, False, None, False)),
    ("another node's pause is not ours", [(OTHER_PAUSE, b"1")], [False],
     (None, False, None, False)),
    ("failed revision", [(FAILED, failed("r2"))], [True], (None, False, "r2", False)),
    ("failed rewritten for the same revision", [(FAILED, failed("r2")), (FAILED, failed("r2", "n3"))],
     [True, False], (None, False, "r2", False)),
    ("failed garbage blocks nothing", [(FAILED, b"{not json")], [False], (None, False, None, False)),
    ("failed not an object", [(FAILED, b"[1, 2]")], [False], (None, False, None, False)),
    ("failed without revision", [(FAILED, b'{"node": "n2"}')], [False], (None, False, None, False)),
    ("failed cleared by resume", [(FAILED, failed("r2")), (FAILED, None)], [True, True],
     (None, False, None, False)),
    ("halted exists, even empty", [(HALTED, b"")], [True], (None, False, None, True)),
    ("halted deleted", [(HALTED, b"{}"), (HALTED, None)], [True, True], (None, False, None, False)),
    ("unrelated key", [(b"/sk/nodes/n1/status", b"{}"), (b"/other/desired/revision", b"x")],
     [False, False], (None, False, None, False)),
]  # fmt: skip


@pytest.mark.parametrize(("name", "events", "flags", "end"), CASES, ids=[c[0] for c in CASES])
def test_absorb(name: str, events: list[tuple[bytes, bytes | None]], flags: list[bool],
                end: tuple[Any, ...]) -> None:  # fmt: skip
    c = Control(P, "n1")
    assert [c.absorb(k, v) for k, v in events] == flags
    assert (c.desired, c.paused, c.failed_revision, c.halted) == end


def test_watched_keys_are_the_ones_absorbed() -> None:
    c = Control(P, "n1")
    assert c.watched() == (D.decode(), PAUSE.decode(), FAILED.decode(), HALTED.decode())
    values = (b"r1", b"1", failed("r1"), b"")
    assert [c.absorb(k.encode(), v) for k, v in zip(c.watched(), values, strict=True)] == [True] * 4


@pytest.mark.parametrize(
    ("info", "revision", "expected"),
    [
        (failed("r2", "n1", "a.service failed"), "r2", "a.service failed"),
        (failed("r2", "n1", ""), "r2", "apply failed"),
        (failed("r2", "n2"), "r2", None),  # failed elsewhere: this node is merely halted
        (failed("r2", "n1"), "r3", None),  # a newer revision was published since
        (failed("r2", "n1"), None, None),
    ],
)
def test_failed_here(info: bytes, revision: str | None, expected: str | None) -> None:
    c = Control(P, "n1")
    c.absorb(FAILED, info)
    assert c.failed_here(revision) == expected


def test_the_failed_marker_is_kept_as_stored_for_the_gate_to_compare() -> None:
    c = Control(P, "n1")
    raw = failed("r2")
    c.absorb(FAILED, raw)
    assert c.failed_raw == raw
    c.absorb(FAILED, None)
    assert c.failed_raw is None and c.failed_revision is None
