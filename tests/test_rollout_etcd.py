"""RolloutGate against a real etcd: many nodes (each its own client, lease and alive key)
roll a revision out; the timeline of their status keys, as etcd recorded it, proves that
never more than one manager (and never more than max_unavailable workers) was mid-update.
Also: a dead holder frees its slot by itself, a dead manager blocks the others, a failed
revision halts the rollout until an operator resumes or a new revision is published."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator

import pytest

from reconciler import keys
from reconciler.etcd.client import Etcd, Lease, WatchEvent
from reconciler.models import Role
from reconciler.rollout.decide import Markers, Verdict
from reconciler.rollout.gate import RolloutGate, Slot
from reconciler.status import NodeState, NodeStatus
from tests.fixtures.etcd import EtcdServer

P = "/sk"
M, W = Role.MANAGER, Role.WORKER


class SimNode:
    """The etcd half of an agent: alive lease, status writes, the gate. Apply is a sleep."""

    def __init__(self, e: Etcd, lease: Lease, name: str, role: Role, max_unavailable: int):
        self.e, self.lease, self.name, self.role = e, lease, name, role
        self.markers: Markers | None = None  # as an agent's watches hold them: shortcut
        self.gate = RolloutGate(e, P, name, role, lease, max_unavailable=max_unavailable)

    @classmethod
    async def start(
        cls, ep: str, name: str, role: Role, max_unavailable: int = 1, ttl: int = 2
    ) -> SimNode:
        e = await Etcd.connect([ep])
        lease = await e.lease(ttl)
        await e.put(keys.node_alive(P, name), "{}", lease=lease)
        node = cls(e, lease, name, role, max_unavailable)
        await node.report(NodeState.CONVERGED, "old")
        return node

    def doc(self, state: NodeState, revision: str, error: str = "", rollout: str = "") -> str:
        return NodeStatus(
            node=self.name,
            role=self.role.value,
            state=state,
            revision=revision,
            desired="new",
            error=error,
            rollout=rollout,
        ).to_json()

    async def report(self, state: NodeState, revision: str, error: str = "") -> None:
        await self.e.put(keys.node_status(P, self.name), self.doc(state, revision, error))

    async def update(self, work: float, *, fail: bool = False) -> Slot | None:
        """As the agent does it: the applying status goes with the slot, the final one
        with its release, each in one transaction."""
        slot = await self.gate.acquire(
            "new",
            "old",
            applying=self.doc(NodeState.APPLYING, "old"),
            waiting=self.doc(NodeState.CONVERGED, "old", rollout="waiting"),
            markers=self.markers,
        )
        if slot is None:
            return None
        await asyncio.sleep(work)  # stands for the apply
        if fail:
            await self.gate.mark_failed("new", "unit x failed")
            final = self.doc(NodeState.DEGRADED, "old", "unit x failed: rolled back")
        else:
            final = self.doc(NodeState.CONVERGED, "new")
        await self.gate.release(slot, final)
        return slot

    async def crash(self) -> None:
        await self.e.close()  # keepalives stop: the lease (alive, slot) expires by itself


@contextlib.asynccontextmanager
async def recording(ep: str) -> AsyncIterator[list[tuple[int, str, NodeState]]]:
    """Every status write under the prefix, in etcd revision order."""
    e = await Etcd.connect([ep])
    _, rev = await e.get_prefix(P + "/")
    timeline: list[tuple[int, str, NodeState]] = []

    async def run() -> None:
        async for ev in e.watch_prefix(P + "/nodes/", start_revision=rev + 1):
            assert isinstance(ev, WatchEvent)
            nk = keys.split_node_key(P, ev.kv.key)
            if ev.kind == "put" and nk and nk[1] == "status":
                timeline.append((ev.revision, nk[0], NodeStatus.from_json(ev.kv.value).state))

    task = asyncio.create_task(run())
    try:
        yield timeline
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await e.close()


def max_concurrent(timeline: list[tuple[int, str, NodeState]], names: set[str]) -> int:
    state: dict[str, NodeState] = {}
    peak = 0
    for _, node, st in sorted(timeline):
        state[node] = st
        peak = max(peak, sum(1 for n, s in state.items() if n in names and s is NodeState.APPLYING))
    return peak


@pytest.mark.parametrize("markers", [None, Markers()], ids=["read-first", "shortcut"])
async def test_managers_one_at_a_time_workers_up_to_max(
    etcd_server: EtcdServer, markers: Markers | None
) -> None:
    ep = etcd_server.endpoint
    managers = [await SimNode.start(ep, f"m{i}", M, 2) for i in range(3)]
    workers = [await SimNode.start(ep, f"w{i}", W, 2) for i in range(6)]
    nodes = managers + workers
    for n in nodes:
        n.markers = markers
    try:
        async with recording(ep) as timeline:
            await nodes[0].e.put(keys.desired_revision(P), "new")
            rnd = random.Random(7)
            await asyncio.wait_for(
                asyncio.gather(*(n.update(rnd.uniform(0.1, 0.3)) for n in nodes)), 30
            )
            await asyncio.sleep(0.2)  # let the recorder drain the last events
        assert max_concurrent(timeline, {n.name for n in managers}) == 1
        assert max_concurrent(timeline, {n.name for n in workers}) == 2  # used, never exceeded
        kvs, _ = await nodes[0].e.get_prefix(P + "/nodes/")
        final = [NodeStatus.from_json(kv.value) for kv in kvs if kv.key.endswith(b"/status")]
        assert {(s.node, s.state, s.revision) for s in final} == {
            (n.name, NodeState.CONVERGED, "new") for n in nodes
        }
        assert (await nodes[0].e.get_prefix(keys.rollout_slots_prefix(P)))[0] == []
    finally:
        for n in nodes:
            await n.e.close()


async def test_status_travels_with_the_slot(etcd_server: EtcdServer) -> None:
    """The applying status is written with the slot, "waiting" only by a node that has to
    wait, and the final status with the release."""
    ep = etcd_server.endpoint
    w1 = await SimNode.start(ep, "w1", W, 1)
    w2 = await SimNode.start(ep, "w2", W, 1)

    async def status(n: SimNode) -> NodeStatus:
        kv = await n.e.get(keys.node_status(P, n.name))
        assert kv is not None
        return NodeStatus.from_json(kv.value)

    try:
        async with recording(ep) as timeline:
            await w1.e.put(keys.desired_revision(P), "new")
            slot = await w1.gate.acquire(
                "new",
                "old",
                applying=w1.doc(NodeState.APPLYING, "old"),
                waiting=w1.doc(NodeState.CONVERGED, "old", rollout="waiting"),
            )
            assert slot is not None and slot.key is not None
            assert (await status(w1)).state is NodeState.APPLYING
            waiting = asyncio.create_task(
                w2.gate.acquire(
                    "new",
                    "old",
                    applying=w2.doc(NodeState.APPLYING, "old"),
                    waiting=w2.doc(NodeState.CONVERGED, "old", rollout="waiting"),
                )
            )
            await asyncio.sleep(0.3)
            assert not waiting.done()
            assert (await status(w2)).rollout == "waiting"
            await w1.gate.release(slot, w1.doc(NodeState.CONVERGED, "new"))
            st1 = await status(w1)
            assert (st1.state, st1.revision) == (NodeState.CONVERGED, "new")
            slot2 = await asyncio.wait_for(waiting, 10)
            assert slot2 is not None and slot2.key == slot.key  # the slot w1 freed
            assert (await status(w2)).state is NodeState.APPLYING
            await asyncio.sleep(0.2)  # let the recorder drain
        # w1 went straight from converged (old) to applying: no "waiting" in between
        assert [st for _, n, st in timeline if n == "w1"] == [
            NodeState.APPLYING,
            NodeState.CONVERGED,
        ]
    finally:
        for n in (w1, w2):
            await n.e.close()


async def test_dead_holder_frees_its_slot(etcd_server: EtcdServer) -> None:
    ep = etcd_server.endpoint
    w1 = await SimNode.start(ep, "w1", W, 1)
    w2 = await SimNode.start(ep, "w2", W, 1)
    try:
        await w1.e.put(keys.desired_revision(P), "new")
        slot = await w1.gate.acquire("new", "old")
        assert slot is not None and slot.key == keys.rollout_slot(P, W, 0)
        waiting = asyncio.create_task(w2.gate.acquire("new", "old"))
        await asyncio.sleep(0.3)
        assert not waiting.done() and w2.gate.last is not None
        assert w2.gate.last.verdict is Verdict.WAIT
        await w1.crash()  # no release: only the lease expiry can free the slot
        got = await asyncio.wait_for(waiting, 2 * w1.lease.ttl + 3)
        assert got is not None and got.key == slot.key
        kv = await w2.e.get(slot.key)
        assert kv is not None and kv.lease == w2.lease.id
    finally:
        await w1.e.close()
        await w2.e.close()


async def test_dead_manager_blocks_other_managers_until_back(etcd_server: EtcdServer) -> None:
    ep = etcd_server.endpoint
    m1 = await SimNode.start(ep, "m1", M)
    m2 = await SimNode.start(ep, "m2", M)
    try:
        await m1.e.put(keys.desired_revision(P), "new")
        await m1.crash()
        # m1's alive key disappears after its TTL (its status still says converged)...
        for _ in range(100):
            if await m2.e.get(keys.node_alive(P, "m1")) is None:
                break
            await asyncio.sleep(0.1)
        # ...so m2 must wait, not proceed.
        waiting = asyncio.create_task(m2.gate.acquire("new", "old"))
        await asyncio.sleep(0.3)
        assert m2.gate.last is not None and m2.gate.last.reason == "manager m1 is not alive"
        assert not waiting.done()
        m1 = await SimNode.start(ep, "m1", M)  # back, converged on the old revision
        got = await asyncio.wait_for(waiting, 5)
        assert got is not None and got.key == keys.rollout_slot(P, M, 0)
    finally:
        await m1.e.close()
        await m2.e.close()


async def test_failed_revision_halts_until_resume_or_new_publish(
    etcd_server: EtcdServer,
) -> None:
    ep = etcd_server.endpoint
    ms = [await SimNode.start(ep, f"m{i}", M) for i in range(3)]
    try:
        await ms[0].e.put(keys.desired_revision(P), "new")
        assert await ms[0].update(0.05, fail=True) is not None
        # m0 is degraded now; make it healthy-on-old again (its rollback succeeded) so only
        # the failed marker can be what stops the others.
        await ms[0].report(NodeState.CONVERGED, "old")
        # While halted the gate answers None at once (the agent stays on its revision and
        # asks again when etcd changes) and says why.
        for m in ms[1:]:
            assert await asyncio.wait_for(m.gate.acquire("new", "old"), 5) is None
            assert m.gate.last is not None and m.gate.last.verdict is Verdict.HALTED
        assert (await ms[0].e.get(keys.rollout_slot(P, M, 0))) is None
        failed = await ms[0].e.get(keys.rollout_failed(P))
        assert failed is not None and b'"node": "m0"' in failed.value
        # Operator resumes: one of the two gets the manager slot.
        await ms[0].e.delete(keys.rollout_failed(P))
        others = [asyncio.create_task(m.gate.acquire("new", "old")) for m in ms[1:]]
        done, pending = await asyncio.wait(others, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        assert len(done) == 1 and len(pending) == 1
        # A newer revision published while the other waits: it gives up to re-plan.
        await ms[0].e.put(keys.desired_revision(P), "newer")
        assert await asyncio.wait_for(pending.pop(), 5) is None
    finally:
        for m in ms:
            await m.e.close()


async def test_restarted_holder_moves_slot_to_new_lease(etcd_server: EtcdServer) -> None:
    ep = etcd_server.endpoint
    w1 = await SimNode.start(ep, "w1", W)
    try:
        await w1.e.put(keys.desired_revision(P), "new")
        slot = await w1.gate.acquire("new", "old")
        assert slot is not None and slot.key is not None
        await w1.crash()
        again = await SimNode.start(ep, "w1", W)  # the restarted agent: a new lease
        try:
            slot2 = await again.gate.acquire("new", "old")
            assert slot2 == slot
            kv = await again.e.get(slot.key)
            assert kv is not None and kv.lease == again.lease.id
        finally:
            await again.e.close()
    finally:
        await w1.e.close()


async def test_a_followed_branch_head_takes_slots_until_something_is_published(
    etcd_server: EtcdServer,
) -> None:
    """With nothing published the agent follows the branch head: the gate treats it as the
    rollout's revision (slots, one worker at a time) until a revision gets published."""
    ep = etcd_server.endpoint
    w1 = await SimNode.start(ep, "w1", W, 1)
    w2 = await SimNode.start(ep, "w2", W, 1)
    try:
        slot = await w1.gate.acquire("new", "old", published=False)
        assert slot is not None and slot.key == keys.rollout_slot(P, W, 0)
        waiting = asyncio.create_task(w2.gate.acquire("new", "old", published=False))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # max_unavailable 1: the second worker waits its turn
        await w1.e.put(keys.desired_revision(P), "other")  # someone publishes: stop following
        assert await asyncio.wait_for(waiting, 10) is None
        assert await w2.gate.acquire("new", "old", published=False) is None
        assert await w2.gate.acquire("new", "old") is None  # "new" is not what was published
    finally:
        for n in (w1, w2):
            await n.e.close()


async def _status(n: SimNode) -> NodeStatus:
    kv = await n.e.get(keys.node_status(P, n.name))
    assert kv is not None
    return NodeStatus.from_json(kv.value)


async def test_a_worker_whose_watches_are_current_takes_its_slot_in_one_request(
    etcd_server: EtcdServer,
) -> None:
    w1 = await SimNode.start(etcd_server.endpoint, "w1", W, 2)
    old_failure = json.dumps({"revision": "older", "node": "w9"})
    try:
        await w1.e.put(keys.desired_revision(P), "new")
        await w1.e.put(keys.rollout_failed(P), old_failure)  # names another revision
        before = w1.e.request_count
        slot = await w1.gate.acquire("new", "old", applying=w1.doc(NodeState.APPLYING, "old"),
                                     markers=Markers(old_failure.encode()))  # fmt: skip
        assert w1.e.request_count - before == 1
        assert slot is not None and slot.key is not None
        kv = await w1.e.get(slot.key)
        assert kv is not None and kv.lease == w1.lease.id
        assert (await _status(w1)).state is NodeState.APPLYING
    finally:
        await w1.e.close()


@pytest.mark.parametrize(
    ("world", "markers"),
    [
        ({"rollout/failed": json.dumps({"revision": "new", "node": "w9"})}, Markers()),
        ({"rollout/halted": "{}"}, Markers()),
        ({"desired/revision": "newer"}, Markers()),
    ],
    ids=["failed-unseen", "halted-unseen", "desired-moved"],
)  # fmt: skip
async def test_stale_watches_never_take_a_slot_the_read_would_refuse(
    etcd_server: EtcdServer, world: dict[str, str], markers: Markers
) -> None:
    """The markers the agent holds lag etcd: the transaction's guards catch it, the gate
    reads, and decides as it always did (halted, or the desired revision moved on)."""
    w1 = await SimNode.start(etcd_server.endpoint, "w1", W, 2)
    try:
        await w1.e.put(keys.desired_revision(P), "new")
        for k, v in world.items():
            await w1.e.put(f"{P}/{k}", v)
        slot = await w1.gate.acquire("new", "old", applying=w1.doc(NodeState.APPLYING, "old"),
                                     markers=markers)  # fmt: skip
        assert slot is None
        assert (await w1.e.get_prefix(keys.rollout_slots_prefix(P)))[0] == []
        assert (await _status(w1)).state is NodeState.CONVERGED  # never said applying
    finally:
        await w1.e.close()


async def test_a_shortcut_that_finds_every_slot_taken_waits_like_a_read(
    etcd_server: EtcdServer,
) -> None:
    w1 = await SimNode.start(etcd_server.endpoint, "w1", W, 1)
    w2 = await SimNode.start(etcd_server.endpoint, "w2", W, 1)
    try:
        await w1.e.put(keys.desired_revision(P), "new")
        held = await w1.gate.acquire("new", "old", markers=Markers())
        assert held is not None
        waiting = asyncio.create_task(w2.gate.acquire(
            "new", "old", applying=w2.doc(NodeState.APPLYING, "old"),
            waiting=w2.doc(NodeState.CONVERGED, "old", rollout="waiting"), markers=Markers()))  # fmt: skip
        await asyncio.sleep(0.3)
        assert not waiting.done() and (await _status(w2)).rollout == "waiting"
        await w1.gate.release(held, w1.doc(NodeState.CONVERGED, "new"))
        slot = await asyncio.wait_for(waiting, 10)
        assert slot is not None and slot.key == held.key
    finally:
        for n in (w1, w2):
            await n.e.close()
