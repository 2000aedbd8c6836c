"""Coalescing of identical notification events, so a flapping unit cannot flood a channel.

Events are identical when their ``key`` (kind, node, unit, revision) is. The first event of a
key opens a window; identical events inside it only raise a count, and when the window
closes one :class:`Delivery` says "this happened N times". A key that keeps coming back
right after its window closed gets a window twice as long each time (up to ``max_window``),
so a unit repaired on every pass produces a message every few minutes, not every pass; the
window shrinks back once the key has been quiet for ``max_window``.

Pure bookkeeping with the clock passed in: no asyncio, no I/O, trivially testable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable
from dataclasses import dataclass

from reconciler.notify.events import Event


@dataclass(frozen=True, slots=True)
class Delivery:
    """What a notifier sends: the latest of ``count`` identical events, first seen at
    ``first_at`` and last at ``event.at`` (both unix time)."""

    event: Event
    count: int = 1
    first_at: float = 0.0

    @property
    def span(self) -> float:
        return max(0.0, self.event.at - self.first_at)


@dataclass(slots=True)
class _Pending:
    event: Event
    count: int
    first_at: float
    deadline: float
    length: float  # this window's length, remembered to double it if the key comes back


class Coalescer:
    """Bounded table of open windows, keyed by ``Event.key``."""

    def __init__(self, window: float, max_window: float, *, capacity: int = 256) -> None:
        self.window = max(0.0, window)
        self.max_window = max(self.window, max_window)
        self.capacity = max(1, capacity)
        self._pending: dict[Hashable, _Pending] = {}
        # key -> (length of its last window, monotonic time that window closed)
        self._history: dict[Hashable, tuple[float, float]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, event: Event, now: float) -> tuple[int, int]:
        """Fold ``event`` in. Returns (merged, dropped): merged is 1 when it joined an open
        window; dropped counts windows thrown away because the table was full."""
        key = event.key
        pending = self._pending.get(key)
        if pending is not None:
            held = pending.event.severity
            if event.severity.rank >= held.rank:
                pending.event = event
            else:  # keep the newest text but never lower the severity of the window
                pending.event = dataclasses.replace(event, severity=held)
            pending.count += 1
            return 1, 0
        dropped = 0
        if len(self._pending) >= self.capacity:
            # drop the oldest window: dicts keep insertion order
            oldest = next(iter(self._pending))
            del self._pending[oldest]
            dropped = 1
        length = self._window_for(key, now)
        self._pending[key] = _Pending(event, 1, event.at, now + length, length)
        return 0, dropped

    def _window_for(self, key: Hashable, now: float) -> float:
        last = self._history.get(key)
        if last is None:
            return self.window
        length, closed_at = last
        if now - closed_at >= self.max_window:
            return self.window
        return min(self.max_window, max(self.window, length * 2))

    def next_deadline(self) -> float | None:
        if not self._pending:
            return None
        return min(p.deadline for p in self._pending.values())

    def pop_due(self, now: float) -> list[Delivery]:
        """Close every window whose deadline has passed, oldest first."""
        due = [k for k, p in self._pending.items() if p.deadline <= now]
        out = []
        for key in due:
            p = self._pending.pop(key)
            self._history.pop(key, None)  # re-insert so the dict stays ordered by close time
            self._history[key] = (p.length, now)
            out.append(Delivery(p.event, p.count, p.first_at))
        self._forget(now)
        return out

    def drain(self) -> list[Delivery]:
        """Close every window now (shutdown)."""
        out = [Delivery(p.event, p.count, p.first_at) for p in self._pending.values()]
        self._pending.clear()
        return out

    def _forget(self, now: float) -> None:
        if len(self._history) <= self.capacity:
            return
        for key, (_, closed_at) in list(self._history.items()):
            if now - closed_at >= self.max_window:
                del self._history[key]
        while len(self._history) > 4 * self.capacity:  # many distinct recent keys: forget oldest
            del self._history[next(iter(self._history))]
