"""Safe rollout of a new revision across the cluster, coordinated in etcd with leases.

Rules: managers update strictly one at a time, and only while every other
manager is alive and healthy, so etcd/swarm quorum is never at risk; workers update up to
``max_unavailable`` at once; a node whose apply rolled back marks the revision failed and
the rollout halts (nodes not yet updated stay on their revision until a new revision is
published or an operator resumes).

Mechanism: an update slot is a key (``keys.rollout_slot``) created only if absent and bound
to the holder's ``alive`` lease, so a node that dies mid-update frees its slot by itself
when the lease expires. There is one manager slot and ``max_unavailable`` worker slots.

Split in two:
- ``decide(view)`` is pure: from a snapshot (this node, its peers' alive/status, the slot
  holders, halt/failed markers) it says what to do now. Table and hypothesis tests.
- ``RolloutGate`` reads that snapshot from etcd, tries the slots ``decide`` offers with
  ``create_first_absent`` (up to eight per request), and otherwise waits on a watch of the prefix (never a sleep) until
  something changes. Release the slot only AFTER writing the node's new status, so the next
  manager sees this one converged.
- A worker whose agent's watches hold the markers skips that read: ``shortcut`` (pure)
  says whether a read would only offer slots, and the taking transaction compares the
  desired revision and the markers with what the watches saw; any mismatch, or every slot
  tried taken, falls back to read-and-decide.

A node that has never applied anything ("fresh") needs no slot: it has nothing running that
an update could break, and requiring one would deadlock a cluster's first boot (every
manager would wait for the others to be converged).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aetcd import rpc

from reconciler import keys, log
from reconciler.etcd import ops
from reconciler.models import Role
from reconciler.rollout.decide import (
    Decision,
    Markers,
    Verdict,
    decide,
    shortcut,
    slot_holder,
    view_from_kvs,
)
from reconciler.status import utcnow

if TYPE_CHECKING:
    from reconciler.etcd.client import Etcd, Lease, Resynced, WatchEvent

# free slots tried per request (nested transactions; etcd allows 128 operations in one)
SLOTS_PER_TRY = 8

# -- the etcd side --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Slot:
    """Permission to apply ``revision``. ``key`` is None when no slot was needed; ``value``
    is what the slot key holds while it is ours (released only if it still does)."""

    revision: str
    key: str | None
    value: bytes = b""


def slot_order(node: str, slots: Sequence[int]) -> list[int]:
    """``slots`` in the order ``node`` tries them: from a slot of its own (stable per node)."""
    k = zlib.crc32(node.encode()) % len(slots)
    return [*slots[k:], *slots[:k]]


class RolloutGate:
    """Takes and releases this node's update slot. One per agent.

    The node's status is written in the same etcd transaction as the slot it is about
    (``applying`` with the taking, the final one with the release): one request instead
    of two each time, and no moment where a peer sees the slot without the status.
    """

    def __init__(
        self,
        etcd: Etcd,
        prefix: str,
        node: str,
        role: Role,
        lease: Lease,
        *,
        max_unavailable: int = 1,
    ) -> None:
        self.etcd = etcd
        self.prefix = keys.norm(prefix)
        self.node = node
        self.role = role
        self.lease = lease  # the node's alive lease: the slot dies with the node
        self.max_unavailable = max_unavailable
        self.last: Decision | None = None  # what the gate is waiting on (status "waiting")
        self.status_key = keys.node_status(self.prefix, node)

    async def acquire(
        self,
        revision: str,
        applied: str,
        *,
        applying: str | None = None,
        waiting: str | None = None,
        published: bool = True,
        markers: Markers | None = None,
    ) -> Slot | None:
        """Wait until this node may apply ``revision``. None when it must not: the rollout
        is halted (``self.last`` says why; ask again when etcd changes) or the desired
        revision moved on (or vanished) while waiting, so the caller re-plans instead.

        ``applying``: the status to publish once allowed (with the slot, atomically);
        ``waiting``: the status to publish if, and only when, it has to wait first.
        ``published=False``: ``revision`` is the branch head an agent follows while nothing
        is published; it stays the rollout's revision as long as nothing gets published.
        ``markers``: the rollout markers as the agent's watches hold them; a worker then
        tries its slots before reading anything (``shortcut``)."""
        if markers is not None and published:
            slot = await self._shortcut(revision, applied, markers, applying)
            if slot is not None:
                return slot
        kvs, rev = await self._read()
        watch = None
        try:
            while True:
                desired = kvs.get(keys.desired_revision(self.prefix).encode(), b"").decode()
                if desired.strip() != (revision if published else ""):
                    return None
                view = view_from_kvs(
                    self.prefix,
                    kvs,
                    node=self.node,
                    role=self.role,
                    applied=applied,
                    desired=revision,
                    max_unavailable=self.max_unavailable,
                )
                d = self.last = decide(view)
                if d.verdict in (Verdict.CURRENT, Verdict.FRESH):
                    await self._say(applying)
                    return Slot(revision, None)
                if d.verdict is Verdict.HALTED:
                    return None  # the caller stays on its revision and re-plans
                if d.verdict is Verdict.HOLDING:
                    key = keys.rollout_slot(self.prefix, self.role, d.slots[0])
                    held = await self._adopt(key)
                    if held is not None:
                        await self._say(applying)
                        return Slot(revision, key, held)
                if d.verdict is Verdict.TRY:
                    for n in range(0, len(d.slots), SLOTS_PER_TRY):
                        slot = await self._try(revision, d.slots, n, applying)
                        if slot is not None:
                            return slot
                # Wait for the next change under the prefix (a slot freed, a peer converged,
                # a lost race's winner appearing), then decide again.
                if watch is None:
                    log.get("swarmkeeper.rollout").info(
                        "rollout.wait", revision=revision[:12], reason=d.reason
                    )
                    await self._say(waiting)
                    watch = self.etcd.watch_prefix(self.prefix + "/", start_revision=rev + 1)
                item = await anext(watch)
                _apply(kvs, item)
        finally:
            if watch is not None:
                await watch.aclose()  # type: ignore[attr-defined]

    async def _try(
        self,
        revision: str,
        slots: tuple[int, ...],
        n: int,
        applying: str | None,
        guards: Sequence[rpc.Compare] = (),
    ) -> Slot | None:
        """One request: take the first free of ``SLOTS_PER_TRY`` slots from the ``n``-th
        of ``slots``, in this node's order, writing ``applying`` with it.

        The order starts at a slot of this node's own (stable per node): when many workers
        race for many slots, most win their first try instead of all fighting over slot 0
        (O(n) transactions instead of O(n^2)), and several slots go in one request, so
        workers that start at the same slot still take one on the first try."""
        order = slot_order(self.node, slots)[n : n + SLOTS_PER_TRY]
        value = json.dumps({"node": self.node, "revision": revision, "since": utcnow()})
        also = {self.status_key: applying} if applying is not None else None
        tried = [keys.rollout_slot(self.prefix, self.role, i) for i in order]
        took = await self.etcd.create_first_absent(
            tried, value, lease=self.lease, also=also, guards=guards
        )
        return Slot(revision, took, value.encode()) if took is not None else None

    async def _shortcut(
        self, revision: str, applied: str, markers: Markers, applying: str | None
    ) -> Slot | None:
        """A worker behind the desired revision takes a slot in its first request: the
        transaction proves what ``decide`` would have read (the desired revision and the
        markers are as the watches said) instead of reading them first. None: read and
        decide (a marker moved, the slots tried were taken, or this is a manager)."""
        d = shortcut(self.node, self.role, applied, revision, markers, self.max_unavailable)
        if d is None:
            return None
        failed, halted = keys.rollout_failed(self.prefix), keys.rollout_halted(self.prefix)
        guards = (
            ops.value_is(keys.desired_revision(self.prefix), revision),
            ops.absent(halted),
            ops.absent(failed) if markers.failed is None else ops.value_is(failed, markers.failed),
        )
        self.last = d
        return await self._try(revision, d.slots, 0, applying, guards)

    async def _read(self) -> tuple[dict[bytes, bytes], int]:
        """What ``decide`` needs, at one revision: the desired revision and the rollout
        keys; peers' statuses and alive keys only for a manager (a worker's decision never
        looks at them, and fifty of them are most of the bytes)."""
        kvs, rev = await self.etcd.snapshot(
            keys=(keys.desired_revision(self.prefix),),
            prefixes=(keys.rollout_prefix(self.prefix),
                      *((keys.nodes_prefix(self.prefix),) if self.role is Role.MANAGER else ())),
        )  # fmt: skip
        return {k: kv.value for k, kv in kvs.items()}, rev

    async def _say(self, status: str | None) -> None:
        if status is not None:
            await self.etcd.put(self.status_key, status)

    async def _adopt(self, key: str) -> bytes | None:
        """A slot this node took before a restart is bound to its previous lease, which
        will expire mid-update: move it onto the current lease (or lose it cleanly).
        Returns what the slot holds once it is ours, None if it is not."""
        kv = await self.etcd.get(key)
        if kv is None or slot_holder(kv.value) != self.node:
            return None
        if kv.lease == self.lease.id:
            return kv.value
        moved = await self.etcd.compare_and_put(
            key, kv.value, mod_revision=kv.mod_revision, lease=self.lease
        )
        return kv.value if moved else None

    async def release(self, slot: Slot, status: str) -> None:
        """Give the slot back, publishing ``status`` (the node's new one) in the same
        transaction, so the next manager sees this one converged as the slot frees."""
        if slot.key is None:
            await self._say(status)
            return
        # Only our own holding: never delete a slot someone took after ours expired.
        await self.etcd.put_and_release(self.status_key, status, release=slot.key,
                                        holding=slot.value)  # fmt: skip

    async def mark_failed(self, revision: str, error: str) -> None:
        """This node rolled back ``revision``: halt its rollout everywhere."""
        await self.etcd.put(
            keys.rollout_failed(self.prefix),
            json.dumps({"revision": revision, "node": self.node, "error": error, "at": utcnow()}),
        )


def _apply(kvs: dict[bytes, bytes], item: WatchEvent | Resynced) -> None:
    from reconciler.etcd.client import Resynced

    if isinstance(item, Resynced):
        kvs.clear()
        kvs.update({kv.key: kv.value for kv in item.kvs})
    elif item.kind == "put":
        kvs[item.kv.key] = item.kv.value
    else:
        kvs.pop(item.kv.key, None)
