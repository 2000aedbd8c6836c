"""Waiting for systemd jobs by their ``JobRemoved`` signal, never by polling their state.

Every ``JobRemoved`` is recorded as it arrives, whether or not somebody waits yet: the signal
for a quick job can be handled before the coroutine that started it sees the method reply
with the job's path. Results stay recorded (bounded) because systemd merges a second start
of the same unit into the running job, so two callers can wait for one path.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from reconciler.errors import SystemdError

_KEPT = 4096  # finished jobs remembered; job paths are never reused by one manager


class JobTracker:
    """Job path -> result, fed by ``JobRemoved`` and awaited by whoever started the job."""

    def __init__(self) -> None:
        self._done: OrderedDict[str, str] = OrderedDict()
        self._waiters: dict[str, asyncio.Future[str]] = {}
        self._error: SystemdError | None = None

    def removed(self, job: str, result: str) -> None:
        """Record a ``JobRemoved(id, job, unit, result)`` signal."""
        self._done[job] = result
        while len(self._done) > _KEPT:
            self._done.popitem(last=False)
        waiter = self._waiters.pop(job, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(result)

    def result(self, job: str) -> str | None:
        return self._done.get(job)

    def fail_all(self, error: SystemdError) -> None:
        """The connection is gone: nobody will see another signal."""
        self._error = error
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()  # retrieved: an abandoned waiter must not log at GC
        self._waiters.clear()

    async def wait(
        self, job: str, check_every: float, still_there: Callable[[str], Awaitable[bool]]
    ) -> str:
        """The job's result. Every ``check_every`` seconds ``still_there(job)`` is asked; a
        job that is gone without its signal raises SystemdError instead of hanging forever.

        systemd sends JobRemoved before answering anything after the job ended, and messages
        from one sender arrive in order: a vanished job whose signal we have not seen means
        the signal is not coming (not subscribed, or not routed to us).
        """
        done = self._done.get(job)
        if done is not None:
            return done
        if self._error is not None:
            raise SystemdError(str(self._error))
        waiter = self._waiters.get(job)
        if waiter is None:
            waiter = self._waiters[job] = asyncio.get_running_loop().create_future()
        while True:
            try:
                return await asyncio.wait_for(asyncio.shield(waiter), check_every)
            except TimeoutError:
                if not await still_there(job) and job not in self._done:
                    raise SystemdError(f"{job} ended without a JobRemoved signal") from None
