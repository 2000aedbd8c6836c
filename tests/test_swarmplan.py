"""Table tests and properties of the pure swarm membership decisions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.models import Role
from reconciler.swarm.plan import (
    ClusterRecord,
    LocalView,
    NodeAction,
    NodeView,
    Phase,
    Step,
    Verb,
    leader_actions,
    local_action,
    quorum,
)


def apply_actions(nodes: Sequence[NodeView], actions: Sequence[NodeAction]) -> list[NodeView]:
    """The node list after ``actions``: a model of what the leader's actions do."""
    by_id = {n.id: n for n in nodes}
    for a in actions:
        n = by_id.get(a.node_id)
        if n is None:
            continue
        if a.verb is Verb.PROMOTE:
            by_id[a.node_id] = replace(n, role=Role.MANAGER, reachable=n.ready)
        elif a.verb is Verb.DEMOTE:
            by_id[a.node_id] = replace(n, role=Role.WORKER, reachable=False, leader=False)
        elif a.verb is Verb.DRAIN:
            by_id[a.node_id] = replace(n, drained=True)
        elif a.verb is Verb.REMOVE:
            del by_id[a.node_id]
    return list(by_id.values())


M, W = Role.MANAGER, Role.WORKER
ABSENT = ClusterRecord(Phase.ABSENT)
CLAIMED = ClusterRecord(Phase.CLAIMED, claimed_by="node1")
READY = ClusterRecord(Phase.READY, cluster_id="C1", manager_addrs=("10.0.0.1:2377",))
READY3 = ClusterRecord(
    Phase.READY,
    cluster_id="C1",
    manager_addrs=("10.0.0.1:2377", "10.0.0.2:2377", "10.0.0.3:2377"),
)
INACTIVE = LocalView("inactive")
PENDING = LocalView("pending")
MGR_C1 = LocalView("active", "n1", "C1", True, ("10.0.0.1:2377",))
MGR_C2 = LocalView("active", "n1", "C2", True, ("10.9.9.9:2377",))
WRK_C1 = LocalView("active", "n4", "", False, ("10.0.0.1:2377",))
WRK_C2 = LocalView("active", "n4", "", False, ("10.9.9.9:2377",))


@pytest.mark.parametrize(
    ("desired", "local", "cluster", "kw", "step", "role"),
    [
        # bootstrap
        (M, INACTIVE, ABSENT, {}, Step.CLAIM, None),
        (W, INACTIVE, ABSENT, {}, Step.WAIT_CLUSTER, None),
        (M, INACTIVE, CLAIMED, {}, Step.WAIT_CLUSTER, None),
        (W, INACTIVE, CLAIMED, {}, Step.WAIT_CLUSTER, None),
        (M, INACTIVE, READY, {}, Step.JOIN, M),
        (W, INACTIVE, READY, {}, Step.JOIN, W),
        # a would-be manager joins as a worker when the seats are taken (leader promotes)
        (M, INACTIVE, READY3, {"managers_limit": 3}, Step.JOIN, W),
        (M, INACTIVE, READY3, {"managers_limit": 5}, Step.JOIN, M),
        # more managers wanted than cluster.managers: only the first `limit` by name get seats
        (M, INACTIVE, ABSENT, {"managers_limit": 3, "manager_rank": 3}, Step.WAIT_CLUSTER, None),
        (M, INACTIVE, READY, {"managers_limit": 3, "manager_rank": 3}, Step.JOIN, W),
        (M, INACTIVE, READY, {"managers_limit": 3, "manager_rank": 2}, Step.JOIN, M),
        (None, INACTIVE, READY, {}, Step.NOTHING, None),
        # joining in the background
        (W, PENDING, READY, {"pending_for": 3}, Step.WAIT_JOIN, None),
        (W, PENDING, READY, {"pending_for": 300}, Step.CANCEL_JOIN, None),
        (None, PENDING, READY, {}, Step.CANCEL_JOIN, None),
        # steady state
        (M, MGR_C1, READY, {}, Step.PUBLISH, None),
        (W, WRK_C1, READY, {}, Step.NOTHING, None),
        (M, WRK_C1, READY, {}, Step.AWAIT_ROLE, M),
        (W, MGR_C1, READY, {}, Step.AWAIT_ROLE, W),
        # another swarm: never a leave
        (M, MGR_C2, READY, {}, Step.CONFLICT, None),
        (W, WRK_C2, READY, {}, Step.CONFLICT, None),
        (None, MGR_C2, READY, {}, Step.CONFLICT, None),
        # a manager of a swarm etcd does not know publishes it; a worker waits
        (M, MGR_C1, ABSENT, {}, Step.ADOPT, None),
        (W, MGR_C1, ABSENT, {}, Step.WAIT_CLUSTER, None),
        (W, WRK_C1, ABSENT, {}, Step.WAIT_CLUSTER, None),
        # leaving: demotion, then drain acknowledged, then leave
        (None, MGR_C1, READY, {}, Step.AWAIT_ROLE, W),
        (None, WRK_C1, READY, {}, Step.AWAIT_DRAIN, None),
        (None, WRK_C1, READY, {"drained_ack": True}, Step.LEAVE, None),
        # broken engines are reported
        (M, LocalView("locked"), READY, {}, Step.BROKEN, None),
        (M, LocalView("error", error="x"), READY, {}, Step.BROKEN, None),
    ],
)
def test_local_action(desired, local, cluster, kw, step, role) -> None:  # type: ignore[no-untyped-def]
    a = local_action(desired, local, cluster, **kw)
    assert a.step is step
    assert a.role == role


def test_conflict_names_both_swarms() -> None:
    a = local_action(M, MGR_C2, READY)
    assert "C2" in a.reason and "C1" in a.reason


def nv(id_: str, role: Role, **kw: object) -> NodeView:
    base: dict[str, object] = {"name": id_, "ready": True, "reachable": role is M}
    base.update(kw)
    return NodeView(id=id_, role=role, **base)  # type: ignore[arg-type]


def test_promote_one_worker_at_a_time_up_to_limit() -> None:
    nodes = [nv("a", M, leader=True), nv("b", W), nv("c", W)]
    acts = leader_actions(nodes, {"a": M, "b": M, "c": M}, 3)
    assert acts == (NodeAction(Verb.PROMOTE, "b", "b"),)
    full = [nv("a", M, leader=True), nv("b", M), nv("c", M), nv("d", W)]
    assert leader_actions(full, {"a": M, "b": M, "c": M, "d": M}, 3) == ()


def test_demote_respects_quorum() -> None:
    # 3 managers, one unreachable: demoting a reachable one leaves 1 of 2 reachable: no
    nodes = [nv("a", M, leader=True), nv("b", M), nv("c", M, reachable=False, ready=False)]
    assert leader_actions(nodes, {"a": M, "b": W, "c": M}, 3) == ()
    # demoting the unreachable one is fine (2 of 2)
    acts = leader_actions(nodes, {"a": M, "b": M, "c": W}, 3)
    assert acts == (NodeAction(Verb.DEMOTE, "c", "c"),)
    # the last manager is never demoted
    assert leader_actions([nv("a", M, leader=True)], {"a": W}, 1) == ()


def test_swap_demotes_first_then_promotes() -> None:
    nodes = [nv("a", M, leader=True), nv("b", M), nv("c", M), nv("d", W)]
    want = {"a": M, "b": M, "c": W, "d": M}
    acts = leader_actions(nodes, want, 3)
    assert acts == (NodeAction(Verb.DEMOTE, "c", "c"),)
    acts2 = leader_actions(apply_actions(nodes, acts), want, 3)
    assert acts2 == (NodeAction(Verb.PROMOTE, "d", "d"),)


def test_departure_drain_ack_remove() -> None:
    want = {"a": M}
    assert leader_actions([nv("a", M, leader=True), nv("x", W)], want, 1) == (
        NodeAction(Verb.DRAIN, "x", "x"),
    )
    assert leader_actions([nv("a", M, leader=True), nv("x", W, drained=True)], want, 1) == (
        NodeAction(Verb.ACK_DRAINED, "x", "x"),
    )
    gone = nv("x", W, drained=True, ready=False, down_for=3)
    assert leader_actions([nv("a", M, leader=True), gone], want, 1, grace=10) == ()
    gone = nv("x", W, drained=True, ready=False, down_for=11)
    assert leader_actions([nv("a", M, leader=True), gone], want, 1, grace=10) == (
        NodeAction(Verb.REMOVE, "x", "x"),
    )


def test_operator_drain_and_stale_incarnation() -> None:
    nodes = [
        nv("a", M, leader=True),
        nv("x", W),
        nv("old", W, name="x", current=False, ready=False, down_for=60),
    ]
    acts = leader_actions(nodes, {"a": M, "x": W}, 1, leaving=frozenset({"x"}))
    assert NodeAction(Verb.DRAIN, "x", "x") in acts
    assert NodeAction(Verb.REMOVE, "old", "x") in acts
    # without the drain the live incarnation is left alone, the stale one still removed
    acts = leader_actions(nodes, {"a": M, "x": W}, 1)
    assert acts == (NodeAction(Verb.REMOVE, "old", "x"),)


def test_role_left_to_the_node_is_kept() -> None:
    nodes = [nv("a", M, leader=True), nv("b", M), nv("c", W)]
    assert leader_actions(nodes, {"a": M, "b": None, "c": None}, 3) == ()
    # but a node missing from the state altogether is taken out
    assert leader_actions(nodes, {"a": M, "b": None}, 3) == (NodeAction(Verb.DRAIN, "c", "c"),)


def test_unknown_nodes_are_left_alone() -> None:
    nodes = [nv("a", M, leader=True), nv("h", W, name="", ready=False, down_for=999)]
    assert leader_actions(nodes, {"a": M}, 1) == ()


names = st.sampled_from(["a", "b", "c", "d", "e", "f", "g"])


@st.composite
def swarms(draw: st.DrawFn) -> tuple[list[NodeView], dict[str, Role | None], int]:
    limit = draw(st.sampled_from([1, 3, 5]))
    ids = draw(st.lists(names, min_size=1, max_size=7, unique=True))
    nodes = []
    n_mgr = draw(st.integers(1, min(limit, len(ids))))
    for i, name in enumerate(ids):
        role = M if i < n_mgr else W
        ready = draw(st.booleans()) if i else True
        nodes.append(
            NodeView(
                id=name,
                name=name,
                role=role,
                ready=ready,
                reachable=role is M and ready,
                leader=i == 0,
                drained=draw(st.booleans()),
                down_for=0.0 if ready else draw(st.floats(0, 100)),
            )
        )
    desired = {n: draw(st.sampled_from([M, W, None])) for n in ids if draw(st.integers(0, 5))}
    return nodes, desired, limit


@settings(max_examples=200, deadline=None)
@given(swarms(), st.integers(1, 6))
def test_managers_never_exceed_limit_nor_quorum_lost(case, passes: int) -> None:  # type: ignore[no-untyped-def]
    nodes, desired, limit = case
    for _ in range(passes):
        before_m = [n for n in nodes if n.role is M]
        had_quorum = sum(n.reachable for n in before_m) >= quorum(len(before_m))
        acts = leader_actions(nodes, desired, limit, grace=10)
        assert sum(a.verb in (Verb.PROMOTE, Verb.DEMOTE) for a in acts) <= 1
        assert not any(
            a.verb is Verb.REMOVE and a.node_id in {n.id for n in before_m} for a in acts
        )
        nodes = apply_actions(nodes, acts)
        after_m = [n for n in nodes if n.role is M]
        assert len(after_m) <= max(limit, len(before_m))
        assert len(after_m) >= 1
        if had_quorum:
            assert sum(n.reachable for n in after_m) >= quorum(len(after_m))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([M, W, None]),
    st.sampled_from([INACTIVE, PENDING, MGR_C1, MGR_C2, WRK_C1, WRK_C2]),
    st.sampled_from([ABSENT, CLAIMED, READY, READY3]),
    st.booleans(),
)
def test_never_leaves_another_swarm(desired, local, cluster, ack) -> None:  # type: ignore[no-untyped-def]
    a = local_action(desired, local, cluster, drained_ack=ack)
    if local in (MGR_C2, WRK_C2) and cluster.phase is Phase.READY:
        assert a.step is Step.CONFLICT
    if a.step in (Step.LEAVE, Step.CANCEL_JOIN):
        assert local.state == "pending" or (local.role is W and desired is None and ack)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 7), st.sampled_from([1, 3, 5]), st.data())
def test_simultaneous_joiners_never_take_more_seats_than_limit(
    wanted: int, limit: int, data: st.DataObject
) -> None:
    """Every would-be manager decides at once, from the same records: the bootstrapper plus
    the manager-token joiners never exceed the limit, whatever the state asks for."""
    published = data.draw(st.integers(0, limit))  # managers already listed
    cluster_absent = [
        local_action(M, INACTIVE, ABSENT, managers_limit=limit, manager_rank=r).step
        for r in range(wanted)
    ]
    ready = ClusterRecord(
        Phase.READY,
        cluster_id="C1",
        manager_addrs=tuple(f"10.0.0.{i}:2377" for i in range(published)),
    )
    joins = [
        local_action(M, INACTIVE, ready, managers_limit=limit, manager_rank=r).role
        for r in range(wanted)
    ]
    assert cluster_absent.count(Step.CLAIM) <= limit
    assert joins.count(M) <= (limit if published < limit else 0)
