"""The work queue coalesces triggers, honours delays, and backs off with jitter."""

from __future__ import annotations

import asyncio
import random
import time

from reconciler.agent.workqueue import WorkQueue, jittered


async def test_triggers_coalesce_into_one_pass() -> None:
    q = WorkQueue()
    for i in range(50):
        q.enqueue(f"etcd-{i % 3}")
    reasons = await asyncio.wait_for(q.get(), 1)
    assert reasons == {"etcd-0", "etcd-1", "etcd-2"}
    assert not q.pending() and q.coalesced == 49
    waiter = asyncio.create_task(q.get())
    await asyncio.sleep(0.05)
    assert not waiter.done()  # nothing enqueued: the worker sleeps
    q.enqueue("timer")
    assert await asyncio.wait_for(waiter, 1) == {"timer"}


async def test_delay_is_honoured_and_earliest_request_wins() -> None:
    q = WorkQueue()
    t0 = time.monotonic()
    q.enqueue("retry", delay=0.3)
    q.enqueue("publish", delay=0.05)
    assert await asyncio.wait_for(q.get(), 2) == {"retry", "publish"}
    assert 0.04 <= time.monotonic() - t0 < 0.25


def test_jitter_spreads_around_interval() -> None:
    rng = random.Random(1)
    vals = [jittered(300, rng) for _ in range(200)]
    assert min(vals) >= 240 and max(vals) <= 360 and max(vals) - min(vals) > 60
