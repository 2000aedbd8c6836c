"""The one backoff every retry loop uses: exponential, full jitter, a cap, reset on success.

The work queue, the etcd client's RPC retries, its lease keepalive and watch streams, the
notification poster and the agent's watch/heartbeat loops all hold one ``Backoff`` each
instead of their own delay arithmetic. Full jitter (a uniform draw below the exponential
ceiling, never below ``base``) keeps a cluster of agents that failed together from retrying
together. ``failures`` counts the current outage, so a caller can log its first failure
once and a "recovered" line when ``reset`` reports the outage over, never one line a retry.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    """Delay n of an outage is drawn from [base, min(cap, base * 2**n)); ``reset`` ends it."""

    base: float = 1.0
    cap: float = 300.0
    failures: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if not 0 < self.base <= self.cap:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={self.base} cap={self.cap}")

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        self.failures += 1
        ceiling = min(self.cap, self.base * float(2 ** min(self.failures, 62)))
        return self.base + self.rng.random() * max(0.0, ceiling - self.base)

    async def sleep(self) -> float:
        """``next_delay`` and wait that long; returns the delay."""
        delay = self.next_delay()
        await asyncio.sleep(delay)
        return delay

    @property
    def first_failure(self) -> bool:
        """True right after the failure that started this outage (log it once)."""
        return self.failures == 1

    def reset(self) -> int:
        """End the outage; returns how many failures it had (non-zero: say "recovered")."""
        failures, self.failures = self.failures, 0
        return failures
