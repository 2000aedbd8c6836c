"""The agent's work queue: triggers only enqueue; one place decides retry and backoff.

There is one key per agent (its node), so the queue is a coalescing flag: any number of
triggers before the worker wakes up become one pass, and their reasons are merged for the
log line. ``requeue_after_failure`` schedules the next try after the queue's ``Backoff``
(exponential, capped, full jitter); a success resets it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time

from reconciler.backoff import Backoff


class WorkQueue:
    """A coalescing, delay-aware queue for a single reconcile key."""

    def __init__(self, backoff: Backoff | None = None) -> None:
        self._reasons: set[str] = set()
        self._due: float | None = None  # monotonic time the next pass may start
        self._wake = asyncio.Event()
        self.backoff = backoff or Backoff()
        self.enqueued = 0
        self.coalesced = 0

    def enqueue(self, reason: str, delay: float = 0.0) -> None:
        """Ask for a pass ``delay`` seconds from now (the earliest request wins)."""
        self.enqueued += 1
        if self._reasons:
            self.coalesced += 1
        self._reasons.add(reason)
        due = time.monotonic() + max(0.0, delay)
        if self._due is None or due < self._due:
            self._due = due
        self._wake.set()

    def requeue_after_failure(self, reason: str) -> float:
        """Schedule a retry after the next backoff delay; returns the delay."""
        delay = self.backoff.next_delay()
        self.enqueue(reason, delay)
        return delay

    def succeeded(self) -> None:
        self.backoff.reset()

    def pending(self) -> bool:
        return bool(self._reasons)

    async def get(self) -> frozenset[str]:
        """Wait until a pass is due; return the merged reasons and clear them."""
        while True:
            if self._due is not None:
                wait = self._due - time.monotonic()
                if wait <= 0:
                    reasons = frozenset(self._reasons)
                    self._reasons.clear()
                    self._due = None
                    self._wake.clear()
                    return reasons
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=wait)
            else:
                self._wake.clear()
                await self._wake.wait()


def jittered(interval: float, rng: random.Random | None = None, spread: float = 0.2) -> float:
    """``interval`` ± ``spread`` (fraction), so periodic work of many agents spreads out."""
    r = rng or random
    return float(interval * (1 - spread + 2 * spread * r.random()))
