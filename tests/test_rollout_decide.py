"""Pure parts of the agent's etcd side: key schema, NodeStatus JSON, the rollout decision
(table tests) and a hypothesis simulation of many nodes taking and releasing slots."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler import keys
from reconciler.models import Role
from reconciler.rollout.decide import (
    Decision,
    Markers,
    Peer,
    RolloutView,
    SlotHolder,
    Verdict,
    decide,
    failed_revision,
    shortcut,
    view_from_kvs,
)
from reconciler.status import NodeState, NodeStatus

M, W = Role.MANAGER, Role.WORKER
C, A, D = NodeState.CONVERGED, NodeState.APPLYING, NodeState.DEGRADED


def test_keys_schema() -> None:
    p = "/sk/"
    assert keys.desired_revision(p) == "/sk/desired/revision"
    assert keys.node_status(p, "n1") == "/sk/nodes/n1/status"
    assert keys.node_alive(p, "n1") == "/sk/nodes/n1/alive"
    assert keys.node_pause(p, "n1") == "/sk/nodes/n1/pause"
    assert keys.rollout_slot(p, M, 0) == "/sk/rollout/slots/manager/0"
    assert keys.rollout_failed(p) == "/sk/rollout/failed"
    assert keys.rollout_halted(p) == "/sk/rollout/halted"
    assert keys.swarm_cluster(p) == "/sk/swarm/cluster"
    assert keys.swarm_node(p, "n1") == "/sk/swarm/nodes/n1"
    assert keys.services(p, "web", "n1") == "/sk/services/web/n1"
    assert keys.split_node_key(p, b"/sk/nodes/n1/alive") == ("n1", "alive")
    assert keys.split_node_key(p, "/sk/nodes/n1") is None
    assert keys.split_node_key(p, "/sk/nodes/n1/a/b") is None
    assert keys.split_node_key(p, "/other/nodes/n1/alive") is None
    assert keys.split_slot_key(p, "/sk/rollout/slots/worker/2") == (W, 2)
    assert keys.split_slot_key(p, "/sk/rollout/slots/bogus/2") is None


@pytest.mark.parametrize("bad", ["sk", "/a//b", "", "/with space"])
def test_keys_refuse_bad_prefix(bad: str) -> None:
    with pytest.raises(ValueError):
        keys.node_status(bad, "n1")


@pytest.mark.parametrize("bad", ["", "a/b", " n1"])
def test_keys_refuse_bad_node(bad: str) -> None:
    with pytest.raises(ValueError):
        keys.node_alive("/sk", bad)


def test_status_round_trip_and_tolerance() -> None:
    s = NodeStatus(
        node="n1",
        role="manager",
        state=NodeState.REJECTED,
        revision="a" * 40,
        desired="b" * 40,
        error="state/x.yaml:3: bad",
        problems=("p:1: x",),
        units={"b.service": "active", "a.service": "failed"},
        updated_at="2026-01-02T03:04:05.000000Z",
    )
    back = NodeStatus.from_json(s.to_json())
    assert back == s
    assert list(back.units) == ["a.service", "b.service"]
    data = json.loads(s.to_json())
    data["future_field"] = {"x": 1}
    del data["problems"]
    del data["agent"]
    tolerant = NodeStatus.from_json(json.dumps(data))
    assert tolerant.problems == () and tolerant.state is NodeState.REJECTED
    for bad in ['"text"', "[]", '{"state":"converged"}', '{"node":"n","state":"weird"}', "{"]:
        with pytest.raises(ValueError):
            NodeStatus.from_json(bad)
    assert s.age() is not None and s.age() > 0  # type: ignore[operator]
    assert NodeStatus(node="n", role="", state=C).age() is None


def V(role: Role = M, applied: str = "old", desired: str = "new", **kw: object) -> RolloutView:
    return RolloutView(node="me", role=role, applied=applied, desired=desired, **kw)  # type: ignore[arg-type]


def peer(n: str, role: Role | None = M, alive: bool = True, state: NodeState | None = C) -> Peer:
    return Peer(n, role, alive, state)


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        (V(applied="new"), Decision(Verdict.CURRENT)),
        (V(applied=""), Decision(Verdict.FRESH)),
        (V(peers=(peer("m2"), peer("m3"))), Decision(Verdict.TRY, (0,))),
        (
            V(peers=(peer("m2", alive=False),)),
            Decision(Verdict.WAIT, reason="manager m2 is not alive"),
        ),
        (V(peers=(peer("m2", state=A),)), Decision(Verdict.WAIT, reason="manager m2 is applying")),
        (V(peers=(peer("m2", state=D),)), Decision(Verdict.WAIT, reason="manager m2 is degraded")),
        (
            V(peers=(peer("m2", state=None),)),
            Decision(Verdict.WAIT, reason="manager m2 is unknown"),
        ),
        (
            V(peers=(peer("m2", state=NodeState.PAUSED), peer("m3", state=NodeState.REJECTED))),
            Decision(Verdict.TRY, (0,)),
        ),
        # Workers' health never blocks a manager, nor nodes without a known role.
        (
            V(peers=(peer("w1", W, alive=False), peer("x", None, state=D))),
            Decision(Verdict.TRY, (0,)),
        ),
        (
            V(holders=(SlotHolder(M, 0, "m2"),)),
            Decision(Verdict.WAIT, reason="manager m2 is updating"),
        ),
        (V(holders=(SlotHolder(M, 0, "me"),)), Decision(Verdict.HOLDING, (0,))),
        (V(W, max_unavailable=3, holders=(SlotHolder(W, 1, "w2"),)), Decision(Verdict.TRY, (0, 2))),
        (
            V(W, max_unavailable=1, holders=(SlotHolder(W, 0, "w2"),)),
            Decision(Verdict.WAIT, reason="1 of 1 worker slot(s) in use"),
        ),
        # max_unavailable lowered while higher slots are held: the count still binds.
        (
            V(W, max_unavailable=1, holders=(SlotHolder(W, 3, "w2"),)),
            Decision(Verdict.WAIT, reason="1 of 1 worker slot(s) in use"),
        ),
        (V(W, max_unavailable=0), Decision(Verdict.TRY, (0,))),
        # Workers ignore manager activity.
        (
            V(W, holders=(SlotHolder(M, 0, "m1"),), peers=(peer("m1", state=A),)),
            Decision(Verdict.TRY, (0,)),
        ),
        (
            V(failed_revision="new"),
            Decision(Verdict.HALTED, reason="revision new failed on a node"),
        ),
        (V(failed_revision="older"), Decision(Verdict.TRY, (0,))),
        (V(halted=True), Decision(Verdict.HALTED, reason="rollout halted by an operator")),
        (
            V(applied="", halted=True),
            Decision(Verdict.HALTED, reason="rollout halted by an operator"),
        ),
        (V(applied="new", halted=True), Decision(Verdict.CURRENT)),
    ],
)
def test_decide_table(view: RolloutView, expected: Decision) -> None:
    assert decide(view) == expected


def test_view_from_kvs() -> None:
    p = "/sk"
    st_m2 = NodeStatus(node="m2", role="manager", state=C).to_json().encode()
    kvs = {
        b"/sk/nodes/m2/status": st_m2,
        b"/sk/nodes/m2/alive": b"{}",
        b"/sk/nodes/w1/status": b"garbage",
        b"/sk/nodes/me/alive": b"{}",
        b"/sk/nodes/me/status": NodeStatus(node="me", role="manager", state=C).to_json().encode(),
        b"/sk/rollout/slots/worker/0": b'{"node": "w1"}',
        b"/sk/rollout/failed": b'{"revision": "bad"}',
        b"/sk/rollout/halted": b"{}",
        b"/sk/desired/revision": b"new",
    }
    v = view_from_kvs(p, kvs, node="me", role=M, applied="old", desired="new", max_unavailable=2)
    assert v.peers == (Peer("m2", M, True, C), Peer("w1", None, False, None))
    assert v.holders == (SlotHolder(W, 0, "w1"),)
    assert v.failed_revision == "bad" and v.halted and v.max_unavailable == 2
    # a worker's decision never looks at peers: their statuses are not even parsed
    w = view_from_kvs(p, kvs, node="w9", role=W, applied="old", desired="new", max_unavailable=2)
    assert w.peers == () and w.holders == v.holders and w.halted


# -- simulation ------------------------------------------------------------------------


@dataclass
class SimNode:
    name: str
    role: Role
    applied: str
    alive: bool = True
    state: NodeState = NodeState.CONVERGED
    slot: int | None = None
    updating: bool = False


@dataclass
class Sim:
    nodes: list[SimNode]
    max_unavailable: int
    failed: str = ""
    halted: bool = False
    log: list[str] = field(default_factory=list)

    def view(self, me: SimNode) -> RolloutView:
        return RolloutView(
            node=me.name,
            role=me.role,
            applied=me.applied,
            desired="new",
            peers=tuple(Peer(n.name, n.role, n.alive, n.state) for n in self.nodes if n is not me),
            holders=tuple(
                SlotHolder(n.role, n.slot, n.name) for n in self.nodes if n.slot is not None
            ),
            max_unavailable=self.max_unavailable,
            halted=self.halted,
            failed_revision=self.failed,
        )

    def step(self, action: str, i: int) -> None:
        n = self.nodes[i % len(self.nodes)]
        if action == "try" and n.alive and not n.updating:
            v = self.view(n)
            d = decide(v)
            if d.verdict is Verdict.TRY:
                taken = {x.slot for x in self.nodes if x.role is n.role and x.slot is not None}
                for s in d.slots:
                    if s not in taken:  # create_if_absent
                        # the gate's precondition, checked at the moment it succeeds
                        assert self.failed != "new" and not self.halted
                        if n.role is M:
                            others = [x for x in self.nodes if x.role is M and x is not n]
                            assert all(x.alive and x.state is not A for x in others), v
                            assert all(x.state is not D for x in others), v
                        n.slot, n.updating, n.state = s, True, A
                        break
            elif d.verdict in (Verdict.FRESH, Verdict.HOLDING):
                n.updating, n.state = True, A
        elif action == "finish" and n.alive and n.updating:
            n.applied, n.state, n.updating, n.slot = "new", C, False, None  # status, then release
        elif action == "fail" and n.alive and n.updating:
            self.failed = "new"
            n.state, n.updating, n.slot = C, False, None  # rolled back to old
        elif action == "die" and n.alive:
            n.alive, n.updating, n.slot = False, False, None  # lease expiry frees the slot
        elif action == "revive" and not n.alive:
            n.alive = True
        elif action == "degrade" and n.alive and not n.updating:
            n.state = D
        elif action == "heal" and n.alive and not n.updating:
            n.state = C
        elif action == "resume":
            self.failed, self.halted = "", False
        elif action == "halt":
            self.halted = True
        self.check()

    def check(self) -> None:
        managers = [n for n in self.nodes if n.role is M]
        workers = [n for n in self.nodes if n.role is W]
        assert sum(1 for n in managers if n.slot is not None) <= 1
        assert sum(1 for n in managers if n.updating and n.applied) <= 1
        assert sum(1 for n in workers if n.slot is not None) <= max(1, self.max_unavailable)


ACTIONS = [
    "try",
    "try",
    "try",
    "finish",
    "fail",
    "die",
    "revive",
    "degrade",
    "heal",
    "resume",
    "halt",
]


@settings(max_examples=300, deadline=None)
@given(
    managers=st.integers(1, 4),
    workers=st.integers(0, 5),
    max_unavailable=st.integers(0, 3),
    fresh=st.lists(st.booleans(), min_size=9, max_size=9),
    steps=st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 8)), max_size=80),
)
def test_simulated_rollout_never_exceeds_slots(
    managers: int,
    workers: int,
    max_unavailable: int,
    fresh: list[bool],
    steps: list[tuple[str, int]],
) -> None:
    nodes = [SimNode(f"m{i}", M, "" if fresh[i] else "old") for i in range(managers)]
    nodes += [SimNode(f"w{i}", W, "" if fresh[4 + i] else "old") for i in range(workers)]
    sim = Sim(nodes, max_unavailable)
    for action, i in steps:
        sim.step(action, i)


def test_simulation_reaches_everyone_when_nothing_fails() -> None:
    nodes = [SimNode(f"m{i}", M, "old") for i in range(3)] + [
        SimNode(f"w{i}", W, "old") for i in range(4)
    ]
    sim = Sim(nodes, 2)
    for _ in range(10):
        for i in range(len(nodes)):
            sim.step("try", i)
        for i in range(len(nodes)):
            sim.step("finish", i)
    assert all(n.applied == "new" for n in nodes)


FAILED_R2 = json.dumps({"revision": "r2", "node": "w9"}).encode()


@pytest.mark.parametrize(
    ("role", "applied", "markers", "max_unavailable", "expected"),
    [
        (W, "r1", Markers(), 3, Decision(Verdict.TRY, (0, 1, 2))),
        (W, "r1", Markers(json.dumps({"revision": "r0"}).encode()), 1, Decision(Verdict.TRY, (0,))),
        (W, "r1", Markers(FAILED_R2), 3, None),  # the desired revision failed: read, halt
        (W, "r1", Markers(halted=True), 3, None),  # halted: read, halt
        (W, "r2", Markers(), 3, None),  # already current: nothing to take
        (W, "", Markers(), 3, None),  # fresh: no slot needed, the read path says so
        (M, "r1", Markers(), 3, None),  # a manager reads its peers' health first
    ],
)  # fmt: skip
def test_a_worker_takes_the_shortcut_only_where_a_read_would_try_a_slot(
    role: Role, applied: str, markers: Markers, max_unavailable: int, expected: Decision | None
) -> None:
    assert shortcut("w1", role, applied, "r2", markers, max_unavailable) == expected


@given(
    applied=st.sampled_from(["", "r1", "r2"]),
    failed=st.sampled_from([None, "r1", "r2", "garbage"]),
    halted=st.booleans(),
    held=st.sets(st.integers(0, 3)),
)
def test_a_shortcut_is_a_try_the_read_would_also_allow(
    applied: str, failed: str | None, halted: bool, held: set[int]
) -> None:
    """Whatever the slots, a shortcut happens only where the read path would try too (with
    the free ones): its transaction creates only an absent slot, so it can never exceed."""
    raw = None if failed is None else (failed.encode() if failed == "garbage"
                                       else json.dumps({"revision": failed}).encode())  # fmt: skip
    d = shortcut("w1", W, applied, "r2", Markers(raw, halted), 4)
    holders = tuple(SlotHolder(W, i, f"w{10 + i}") for i in sorted(held))
    read = decide(RolloutView("w1", W, applied, "r2", holders=holders, max_unavailable=4,
                              halted=halted, failed_revision=failed_revision(raw)))  # fmt: skip
    if d is not None:
        assert read.verdict in (Verdict.TRY, Verdict.WAIT)
        assert set(read.slots) <= set(d.slots)
