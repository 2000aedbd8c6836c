"""Cost of notifications to the agent: emit() per call, and a pass loop with a dead webhook.

Prints:
- emit() per call for distinct events (a new coalescing window each) and for identical ones
  (folded into one window), next to the raw baseline of ``asyncio.Queue.put_nowait`` of the
  same object, measured in the same run, with the ratio;
- the time of a simulated pass loop (awaits, a little CPU, 3 emits per pass) with a healthy
  webhook, a webhook that hangs and one that answers 500, with the ratio to the healthy run.
Targets: emit() within a few microseconds; a dead webhook adds nothing measurable to passes.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.log import configure
from reconciler.notify.events import Event, EventKind
from reconciler.notify.hub import Notifications
from reconciler.notify.notifiers import WebhookNotifier
from tests.fixtures.webhook import HookServer

N = 20_000
PASSES = 100


def per_call(fn: object, args: list[object]) -> float:
    assert callable(fn)
    t0 = time.perf_counter()
    for a in args:
        fn(a)
    return (time.perf_counter() - t0) / len(args)


async def emit_costs() -> None:
    distinct = [Event.of(EventKind.DRIFT_REPAIRED, "n", unit=f"u{i}") for i in range(N)]
    same = [Event.of(EventKind.DRIFT_REPAIRED, "n", unit="u") for _ in range(N)]
    rows = {"raw Queue.put_nowait": [], "emit distinct": [], "emit identical": []}
    for _ in range(5):
        q: asyncio.Queue[Event] = asyncio.Queue(maxsize=N)
        rows["raw Queue.put_nowait"].append(per_call(q.put_nowait, list(distinct)))
        hub = Notifications(queue_size=N)
        rows["emit distinct"].append(per_call(hub.emit, list(distinct)))
        hub = Notifications(queue_size=N)
        rows["emit identical"].append(per_call(hub.emit, list(same)))
    base = statistics.median(rows["raw Queue.put_nowait"])
    for name, xs in rows.items():
        med = statistics.median(xs)
        print(f"{name:<22} {med * 1e6:7.2f} µs/call   ratio to raw {med / base:5.1f}x")


async def pass_loop(hub: Notifications) -> float:
    t0 = time.perf_counter()
    for p in range(PASSES):
        await asyncio.sleep(0.002)
        sum(range(20_000))
        for kind in (
            EventKind.REVISION_APPLIED,
            EventKind.DRIFT_REPAIRED,
            EventKind.ROLLOUT_HALTED,
        ):
            hub.emit(Event.of(kind, "node-1", revision=f"{p:040x}", unit="x.service"))
    return time.perf_counter() - t0


async def pass_times() -> None:
    results: dict[str, float] = {}
    for mode in ("ok", "hang", "error"):
        runs = []
        async with HookServer(mode=mode) as srv:
            for _ in range(3):
                hub = Notifications(
                    [WebhookNotifier(srv.url(), mode)], coalesce_window=0.05, request_timeout=2.0
                )
                task = asyncio.create_task(hub.run())
                runs.append(await pass_loop(hub))
                await hub.aclose(flush_within=0.1)
                await task
        results[mode] = statistics.median(runs)
    for mode, t in results.items():
        print(
            f"{PASSES} passes, webhook {mode:<5} {t * 1000:7.1f} ms   "
            f"ratio to healthy webhook {t / results['ok']:4.2f}"
        )


async def main() -> None:
    configure("error")  # abandoned/failed deliveries are expected here; keep output readable
    await emit_costs()
    await pass_times()


if __name__ == "__main__":
    asyncio.run(main())
