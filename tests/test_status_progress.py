"""StatusProgress: a quick apply writes no progress; a long one writes its newest step at a
bounded rate, and nothing after ``close`` (the final status must be the last write)."""

from __future__ import annotations

import asyncio

from reconciler.agent.passes import StatusProgress
from reconciler.status import NodeState, NodeStatus

APPLYING = NodeStatus(node="n1", role="manager", state=NodeState.APPLYING, revision="",
                      desired="r", updated_at="t")  # fmt: skip


def _recorder() -> tuple[list[str], object]:
    written: list[str] = []

    async def write(st: NodeStatus) -> None:
        await asyncio.sleep(0.01)  # an etcd round trip
        written.append(st.progress)

    return written, write


async def test_a_quick_apply_writes_no_progress() -> None:
    written, write = _recorder()
    p = StatusProgress(APPLYING, write, delay=0.2, interval=0.1)  # type: ignore[arg-type]
    for i in range(1, 9):
        p(f"{i}/8 start u{i}.service")
    await asyncio.sleep(0.05)
    await p.close()
    await asyncio.sleep(0.3)  # nothing may arrive late either
    assert written == []


async def test_a_long_apply_writes_its_newest_step_at_a_bounded_rate() -> None:
    written, write = _recorder()
    p = StatusProgress(APPLYING, write, delay=0.1, interval=0.1)  # type: ignore[arg-type]
    p("1/3 start a.service")
    await asyncio.sleep(0.15)
    p("2/3 start b.service")
    p("3/3 verify a.service b.service")
    await asyncio.sleep(0.15)
    await asyncio.sleep(0.3)  # the step did not change: no more writes
    await p.close()
    assert written == ["1/3 start a.service", "3/3 verify a.service b.service"]


async def test_close_waits_for_a_write_in_flight() -> None:
    written: list[str] = []
    started = asyncio.Event()

    async def slow_write(st: NodeStatus) -> None:
        started.set()
        await asyncio.sleep(0.2)
        written.append(st.progress)

    p = StatusProgress(APPLYING, slow_write, delay=0.0, interval=0.05)
    p("1/1 restart a.service")
    await started.wait()
    await p.close()
    assert written == ["1/1 restart a.service"]  # landed before close returned
