"""Posting one notification: per-request timeout, bounded retries, backoff with jitter.

Used by the hub's per-notifier workers (``notify.py``); one ``Poster`` per hub owns the
lazily created aiohttp session. What is retried: timeouts, connection errors, 5xx, 408 and
429 (honouring ``Retry-After`` up to the backoff cap). Any other 4xx means the endpoint
refuses this request (bad URL, bad payload), and repeating it will not help.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from dataclasses import dataclass
from typing import Any

import aiohttp

from reconciler import log
from reconciler.backoff import Backoff


@dataclass(slots=True)
class NotifyStats:
    """Counters for metrics and tests (monotonic over the hub's life)."""

    emitted: int = 0
    coalesced: int = 0  # events folded into an earlier identical one
    dropped: int = 0  # deliveries or events thrown away because a bound was hit
    attempts: int = 0  # HTTP requests started
    sent: int = 0  # deliveries a notifier accepted (2xx)
    failed: int = 0  # deliveries given up after the last attempt or a permanent error
    abandoned: int = 0  # deliveries still queued when aclose's deadline passed


class Poster:
    def __init__(
        self,
        stats: NotifyStats,
        *,
        max_attempts: int,
        request_timeout: float,
        backoff_base: float,
        backoff_max: float,
        rng: random.Random | None = None,
    ) -> None:
        self.stats = stats
        self.max_attempts = max(1, max_attempts)
        self.request_timeout = request_timeout
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._rng = rng or random.Random()
        self._session: aiohttp.ClientSession | None = None
        self._log = log.get("swarmkeeper.notify")

    async def post(self, name: str, url: str, payload: dict[str, Any], kind: str) -> bool:
        """POST ``payload`` as JSON until accepted or out of attempts; True if accepted.
        ``name`` and ``kind`` are for the log line only (the URL is a secret)."""
        reason = ""
        attempt = 0
        backoff = Backoff(base=self.backoff_base, cap=self.backoff_max, rng=self._rng)
        for attempt in range(1, self.max_attempts + 1):
            self.stats.attempts += 1
            retry_after = 0.0
            try:
                async with asyncio.timeout(self.request_timeout):
                    async with self._get_session().post(url, json=payload) as resp:
                        await resp.read()
                        status = resp.status
                        retry_after = _retry_after(resp.headers.get("Retry-After"))
                if 200 <= status < 300:
                    self.stats.sent += 1
                    return True
                reason = f"HTTP {status}"
                if status < 500 and status not in (408, 429):
                    break  # the notifier refuses this request; repeating will not help
            except (TimeoutError, aiohttp.ClientError, OSError) as e:
                reason = type(e).__name__ if isinstance(e, TimeoutError) else repr(e)
            if attempt < self.max_attempts:
                await asyncio.sleep(min(self.backoff_max, max(backoff.next_delay(), retry_after)))
        self.stats.failed += 1
        self._log.warning("notify.failed", notifier=name, kind=kind, attempts=attempt,
                          reason=reason)  # fmt: skip
        return False

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # trust_env stays off: notifications go straight to the hook, never via a proxy
            # some unrelated environment variable happens to name.
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.request_timeout),
                connector=aiohttp.TCPConnector(limit=8),
            )
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()


def _retry_after(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0
