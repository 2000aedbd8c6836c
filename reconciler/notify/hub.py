"""Operator notifications: events, coalescing and a hub that can never slow the agent down.

The agent calls :meth:`Notifications.emit` from anywhere in its event loop. ``emit`` is
synchronous, O(1), never blocks and never raises: it folds the event into a bounded
:class:`Coalescer` (identical events within a window become one delivery with a count). A
flusher task hands due deliveries to one bounded lane per notifier, and each lane's worker
posts with a per-request timeout and bounded retries with exponential backoff and jitter. A
dead or hanging webhook therefore only ever fills its own lane, whose oldest entries are
dropped (and counted) when it is full.

How a delivery is rendered and where it goes is the notifier's business (``notifiers.py``);
this module only needs the small :class:`Sink` interface.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from reconciler import log
from reconciler.notify.coalesce import Coalescer, Delivery
from reconciler.notify.events import Event, Severity
from reconciler.notify.post import NotifyStats, Poster


class Sink(Protocol):
    """A notification target: where to POST and what JSON to send for a delivery."""

    @property
    def name(self) -> str: ...  # for logs; never contains the secret URL

    @property
    def url(self) -> str: ...

    @property
    def min_severity(self) -> Severity: ...

    def payload(self, delivery: Delivery) -> dict[str, Any]: ...


@dataclass(eq=False, slots=True)
class _Lane:
    sink: Sink
    capacity: int
    queue: deque[Delivery] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        self.idle.set()


class Notifications:
    """The notification hub. Run :meth:`run` in the agent's TaskGroup; :meth:`aclose` at exit.

    Created without ``sinks`` it holds events until the first :meth:`configure`, so what is
    emitted before the notifiers are known (e.g. ``agent_started``) is not lost."""

    def __init__(
        self,
        sinks: Iterable[Sink] | None = None,
        *,
        queue_size: int = 256,
        coalesce_window: float = 2.0,
        coalesce_max: float = 300.0,
        max_attempts: int = 5,
        request_timeout: float = 5.0,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        rng: random.Random | None = None,
    ) -> None:
        self.stats = NotifyStats()
        self._poster = Poster(
            self.stats,
            max_attempts=max_attempts,
            request_timeout=request_timeout,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            rng=rng,
        )
        self._coalescer = Coalescer(coalesce_window, coalesce_max, capacity=queue_size)
        self._queue_size = queue_size
        self._lanes: dict[tuple[str, str, str], _Lane] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._wake = asyncio.Event()
        self._done = asyncio.Event()  # run() finished its final flush
        self._ended = asyncio.Event()  # the current run() returned, finished or cancelled
        self._running = False
        self._stopping = False
        self._closed = False
        self._deadline = 0.0
        self._log = log.get("swarmkeeper.notify")
        # Until the notifiers are known (the agent learns them from the first rendered
        # revision), due deliveries wait instead of going nowhere: agent_started survives.
        self._configured = False
        if sinks is not None:
            self.configure(sinks)

    # -- the agent-facing API ---------------------------------------------------------------

    def emit(self, event: Event) -> None:
        """Queue an event for every notifier that wants it. Never blocks, never raises.

        Call it from the event loop's thread (like any asyncio object); from a worker thread
        use ``loop.call_soon_threadsafe(hub.emit, event)``."""
        try:
            if self._closed:
                self.stats.dropped += 1
                return
            self.stats.emitted += 1
            merged, dropped = self._coalescer.add(event, time.monotonic())
            self.stats.coalesced += merged
            self.stats.dropped += dropped
            if not merged:
                self._wake.set()
        except Exception as e:  # a notification bug must never break a reconcile pass
            with contextlib.suppress(Exception):
                self._log.error("notify.emit_failed", error=repr(e))

    def configure(self, sinks: Iterable[Sink]) -> None:
        """Replace the notifiers (after a revision changed ``notify:``); unchanged ones keep
        their queue and in-flight retries."""
        self._configured = True
        self._wake.set()
        wanted = {(type(s).__name__, s.url, s.name): s for s in sinks}
        for key in list(self._lanes):
            if key not in wanted:
                lane = self._lanes.pop(key)
                self.stats.dropped += len(lane.queue)
                if lane.task is not None:
                    lane.task.cancel()
        for key, sink in wanted.items():
            if key in self._lanes:
                self._lanes[key].sink = sink  # min_severity may have changed
            else:
                lane = _Lane(sink, self._queue_size)
                self._lanes[key] = lane
                if self._tg is not None:
                    self._start(lane)

    @property
    def sinks(self) -> list[Sink]:
        return [lane.sink for lane in self._lanes.values()]

    async def run(self) -> None:
        """Deliver until :meth:`aclose` is called; then flush within its deadline.

        If the task running this is cancelled instead (the agent's TaskGroup is torn down
        first), nothing is lost: pending events stay queued and a later :meth:`aclose`
        delivers them (and anything emitted meanwhile, such as ``agent_stopped``)."""
        if self._running or self._done.is_set():
            raise RuntimeError("Notifications.run() is already running or has finished")
        self._running = True
        self._ended.clear()
        finished = False
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for lane in self._lanes.values():
                    self._start(lane)
                await self._flush_loop()
                await self._drain()
                for lane in self._lanes.values():
                    if lane.task is not None:
                        lane.task.cancel()
            finished = True
        finally:
            self._tg = None
            self._running = False
            if finished:
                self._closed = True
            await self._poster.aclose()
            if finished:
                self._done.set()
            self._ended.set()

    async def aclose(self, flush_within: float = 5.0) -> None:
        """Send what is pending (coalescing windows are cut short), waiting at most
        ``flush_within`` seconds; then close the HTTP session. Safe to call more than once,
        with or without :meth:`run` running (or cancelled) in another task."""
        if not self._stopping:
            self._stopping = True
            self._deadline = time.monotonic() + flush_within
            self._wake.set()
        while not self._done.is_set():
            if self._running:
                await self._ended.wait()  # finished, or cancelled: then flush here
            else:
                await self.run()

    # -- inside ----------------------------------------------------------------------------

    def _start(self, lane: _Lane) -> None:
        assert self._tg is not None
        if not lane.queue:
            lane.idle.set()  # a previous run may have been cancelled mid-delivery
        lane.task = self._tg.create_task(self._worker(lane), name=f"notify:{lane.sink.name}")

    def _fan_out(self, delivery: Delivery) -> None:
        severity = delivery.event.severity
        for lane in self._lanes.values():
            if severity < lane.sink.min_severity:
                continue
            if len(lane.queue) >= lane.capacity:
                lane.queue.popleft()
                self.stats.dropped += 1
            lane.queue.append(delivery)
            lane.idle.clear()
            lane.wake.set()

    async def _flush_loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            if not self._configured:
                await self._wake.wait()
                continue
            now = time.monotonic()
            for delivery in self._coalescer.pop_due(now):
                self._fan_out(delivery)
            nxt = self._coalescer.next_deadline()
            timeout = None if nxt is None else max(0.0, nxt - now)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    async def _drain(self) -> None:
        self._closed = True  # from here on emit() drops (and counts) instead of queueing
        for delivery in self._coalescer.drain():
            self._fan_out(delivery)
        lanes = list(self._lanes.values())
        waits = [asyncio.ensure_future(lane.idle.wait()) for lane in lanes]
        if waits:
            remaining = max(0.0, self._deadline - time.monotonic())
            _, pending = await asyncio.wait(waits, timeout=remaining)
            for w in pending:
                w.cancel()
        for lane in lanes:
            if not lane.idle.is_set():
                left = len(lane.queue) + 1
                self.stats.abandoned += left
                self._log.warning("notify.abandoned", notifier=lane.sink.name, deliveries=left)

    async def _worker(self, lane: _Lane) -> None:
        while True:
            while not lane.queue:
                lane.idle.set()
                lane.wake.clear()
                await lane.wake.wait()
            delivery = lane.queue.popleft()
            try:
                sink = lane.sink
                await self._poster.post(
                    sink.name, sink.url, sink.payload(delivery), str(delivery.event.kind)
                )
            except asyncio.CancelledError:
                lane.queue.appendleft(delivery)  # not lost: a later run()/aclose() sends it
                raise
            except Exception as e:  # a bug in a payload must not kill the lane
                self.stats.failed += 1
                self._log.error("notify.bug", notifier=lane.sink.name, error=repr(e))
