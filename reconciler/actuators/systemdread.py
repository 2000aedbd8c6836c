"""Reading systemd: unit status through a signal-invalidated cache, warm-up, health waits.

The ``SystemdReader`` a ``reconciler.actuators.systemd.Systemd`` owns, on the same D-Bus
connection. ``status`` answers from ListUnitsByNames plus
per-unit properties kept until a signal says the unit or the manager changed (the signal
handler in ``systemd.py`` tells the reader: ``changed``, ``reloaded``, ``lost``); ``warm`` fills that cache while a caller
waits anyway; ``wait_healthy`` wakes on ``PropertiesChanged`` with a bounded poll as a
fallback and holds units without a readiness protocol to their settle window;
``describe_failure`` is the text a failed apply reports. The D-Bus interface names live
here and are re-exported by ``systemd.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from dbus_fast.aio import MessageBus

from reconciler.actuators.dbus import CallFailed, Endpoint, Scope, call
from reconciler.actuators.describe import describe_from_properties, invocation_hex, journal_tail
from reconciler.actuators.unitstatus import UnitStatus, not_found, settled, unit_path
from reconciler.errors import SystemdError
from reconciler.plan.unittypes import AUTO_RESTART, needs_settle

MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
PROPERTIES = "org.freedesktop.DBus.Properties"

_WARM_CHUNK = 3  # units whose properties warm() reads at a time...
_WARM_DEPTH = 2  # ...with this many chunks in flight
_LOADED = "loaded"
# Cached per unit until a signal says the unit (or the manager) changed. NeedDaemonReload is
# never signalled (systemd compares file mtimes when asked), so it is always read fresh.
_UNIT_PROPS = ("UnitFileState", "InvocationID", "ActiveEnterTimestampMonotonic")
_SERVICE_PROPS = ("MainPID", "Result", "Type", "RemainAfterExit", "NRestarts")


def _from_cache(
    row: list[Any], cached: tuple[Any, ...], need_reload: bool, skipped: bool
) -> UnitStatus:
    name, _desc, load, active, sub = row[:5]
    file_state, invocation, entered = cached[:3]
    main_pid, result, stype, rae, nrestarts = (
        cached[3:] if len(cached) > 3 else (0, "", "", False, 0)
    )
    return UnitStatus(
        name,
        load,
        active,
        sub,
        file_state,
        bytes(invocation).hex(),
        int(main_pid),
        result,
        stype,
        bool(rae),
        need_reload,
        skipped,
        int(nrestarts),
        active_since=int(entered),
    )


class SystemdReader:
    """Unit status through a signal-invalidated cache, warm-up, health waits, failure text."""

    def __init__(
        self,
        bus: MessageBus,
        endpoint: Endpoint,
        scope: Scope,
        *,
        settle: float,
        poll_interval: float,
        journal_socket: Path,
    ) -> None:
        self.scope = scope
        self.endpoint = endpoint
        self.settle = settle  # see wait_healthy
        self.poll_interval = poll_interval  # wait_healthy re-reads at least this often
        self.journal_socket = journal_socket  # describe_failure asks journalctl if it exists
        self._bus = bus
        self._watchers: dict[str, set[asyncio.Event]] = {}
        # Property reads are ~0.17 ms each; 50 units x 6 of them took 45 ms per status().
        # Values are kept until a PropertiesChanged for the unit or a manager-wide signal;
        # the generation counters (manager-wide, and per unit: a signal about another unit
        # says nothing about this one) keep a read that raced with a signal out of the cache.
        self._cache: dict[str, tuple[Any, ...]] = {}
        self._generation = 0
        self._unit_generation: dict[str, int] = {}
        self.refs: set[str] = set()  # units we hold a reference on (see ref)
        self.skipped: set[str] = set()  # unit paths whose last start a condition skipped
        self._lost: SystemdError | None = None

    # -- what the signal handler tells us -------------------------------------------------

    def changed(self, path: str, *, wake: bool = False) -> None:
        """The unit at ``path`` changed: drop its cached properties, wake its waiters."""
        self._unit_generation[path] = self._unit_generation.get(path, 0) + 1
        self._cache.pop(path, None)
        if wake:
            for event in self._watchers.get(path, ()):
                event.set()

    def condition(self, path: str, changed: dict[str, Any]) -> None:
        """A unit's Condition* properties changed (a start checked them).

        A start whose Condition*= is false leaves the unit inactive with Result=success,
        like one stopped by hand; only ConditionResult tells them apart, and on the
        private socket (no Ref) systemd unloads the unit right after the job, so the value
        is kept from the signal it sends before that. Only a real check (a timestamp)
        counts: a freshly loaded unit reports "no" too.
        """
        ts = changed.get("ConditionTimestampMonotonic")
        result = changed.get("ConditionResult")
        if ts is not None and result is not None and ts.value:
            if result.value:
                self.skipped.discard(path)
            else:
                self.skipped.add(path)

    def reloaded(self) -> None:
        """The manager reloaded or unit files changed: nothing cached holds any more."""
        self._generation += 1
        self._cache.clear()

    def lost(self, error: SystemdError) -> None:
        """The connection is gone: every read raises ``error``, every waiter wakes."""
        self._lost = error
        self._cache.clear()
        for events in self._watchers.values():
            for event in events:
                event.set()

    def _generation_of(self, path: str) -> tuple[int, int]:
        return self._generation, self._unit_generation.get(path, 0)

    def _check(self) -> None:
        if self._lost is not None:
            raise SystemdError(str(self._lost))

    async def call(
        self,
        member: str,
        signature: str = "",
        body: list[Any] | None = None,
        *,
        path: str = MANAGER_PATH,
        interface: str = MANAGER,
    ) -> list[Any]:
        self._check()
        return await call(
            self._bus, path=path, interface=interface, member=member, signature=signature, body=body
        )

    # -- reading ---------------------------------------------------------------------------

    async def get(self, path: str, interface: str, prop: str) -> Any:
        (variant,) = await self.call(
            "Get", "ss", [interface, prop], path=path, interface=PROPERTIES
        )
        return variant.value

    async def _list(self, names: Sequence[str]) -> list[list[Any]]:
        """ListUnitsByNames rows; a name systemd rejects outright becomes a not-found row."""
        try:
            (rows,) = await self.call("ListUnitsByNames", "as", [list(names)])
            return list(rows)
        except CallFailed:
            if len(names) == 1:
                return [[names[0], "", "not-found", "inactive", "dead", "", "", 0, "", "/"]]
            each: list[list[Any]] = []
            for name in names:
                each.extend(await self._list([name]))
            return each

    def _known_status(self, row: list[Any]) -> UnitStatus | None:
        """The row's status without a call (NeedDaemonReload False), if the cache allows."""
        name, _desc, load, active, sub, _following, path = row[:7]
        if load == "not-found" or not path:
            return UnitStatus(name, load, active, sub, "", "", 0, "", "", False)
        cached = self._cache.get(path)
        return None if cached is None else _from_cache(row, cached, False, path in self.skipped)

    async def _status_row(self, row: list[Any], need_reload: bool = True) -> tuple[UnitStatus, int]:
        name, _desc, load, active, sub, _following, path, job_id = row[:8]
        if load == "not-found" or not path:
            return UnitStatus(name, load, active, sub, "", "", 0, "", "", False), job_id
        cached = self._cache.get(path)
        reload_read = [self.get(path, UNIT, "NeedDaemonReload")] if need_reload else []
        if cached is None:
            generation = self._generation_of(path)
            if load == _LOADED and not self.endpoint.peer_to_peer and path not in self.refs:
                await self.ref(path)
            fetched = await asyncio.gather(
                *reload_read,
                *(self.get(path, UNIT, p) for p in _UNIT_PROPS),
                *(
                    self.get(path, SERVICE, p)
                    for p in (_SERVICE_PROPS if name.endswith(".service") else ())
                ),
            )
            cached = tuple(fetched[len(reload_read) :])
            if generation == self._generation_of(path):  # no signal since we asked: still true
                self._cache[path] = cached
        else:
            fetched = [await reload_read[0]] if reload_read else []
        need = bool(fetched[0]) if reload_read else False
        return _from_cache(row, cached, need, path in self.skipped), job_id

    async def ref(self, path: str) -> None:
        """Keep the unit loaded while we are connected (systemd tracks our bus name).

        An unreferenced inactive unit is garbage-collected after every message and re-read
        from disk by the next (6 property reads: 4.2 ms, not 1.2 ms), emptying our cache.
        Needs a bus daemon: on the private socket there is no name to track (InvalidArgs).
        """
        try:
            await self.call("Ref", path=path, interface=UNIT)
        except CallFailed:
            return
        self.refs.add(path)

    async def status(
        self, names: Sequence[str], *, need_reload: bool = True
    ) -> dict[str, UnitStatus]:
        """State of each named unit; unknown units come back as load_state ``not-found``.

        ``need_reload=False`` skips NeedDaemonReload (reported False): it is the one
        property read fresh for every unit (one call each, ~0.15 ms), and a caller that
        daemon-reloads anyway, or only wants the active state, does not need it.
        """
        if not names:
            return {}
        rows = await self._list(names)
        out: dict[str, UnitStatus] = {}
        slow = []
        for r in rows:  # cached rows need no call: no task per row either (50: ~0.8 ms)
            st = None if need_reload else self._known_status(r)
            if st is None:
                slow.append(r)
            else:
                out[st.name] = st
        done = await asyncio.gather(*(self._status_row(r, need_reload) for r in slow))
        out.update((st.name, st) for st, _job in done)
        return {n: out.get(n) or not_found(n) for n in names}

    async def need_daemon_reload(self, names: Sequence[str]) -> dict[str, bool]:
        """NeedDaemonReload of loaded units: what ``status(need_reload=False)`` leaves out."""

        async def one(name: str) -> bool:
            try:
                return bool(await self.get(unit_path(name), UNIT, "NeedDaemonReload"))
            except CallFailed:
                return False  # unloaded meanwhile: nothing loaded to be stale

        return dict(zip(names, await asyncio.gather(*map(one, names)), strict=True))

    async def fragment_paths(self, names: Sequence[str]) -> dict[str, str]:
        """The file each unit was loaded from (``FragmentPath``; "" when none or unloaded).

        Only units the engine is about to adopt are asked: a vendor unit in another unit
        directory, whose definition decides whether our copy changes what runs.
        """

        async def one(name: str) -> str:
            try:
                return str(await self.get(unit_path(name), UNIT, "FragmentPath"))
            except CallFailed:
                return ""

        return dict(zip(names, await asyncio.gather(*map(one, names)), strict=True))

    async def warm(self, names: Sequence[str], ends: float) -> None:
        """Fill the status cache of ``names`` (minus NeedDaemonReload) until loop time ``ends``.

        For a caller that waits anyway (the apply engine's health gate) and will read these
        statuses next. One ListUnitsByNames for all, then the property reads of a few units
        at a time, two chunks in flight so systemd never idles while we parse replies.
        No chunk is started that would, judged by the last one, still run at ``ends``:
        systemd answers one connection in order, and the caller's own reads then would
        queue behind ours (seen: 13 ms late under load). Best effort: errors are dropped.
        """
        loop = asyncio.get_running_loop()
        rows = [
            r
            for r in await self._list(names)
            if r[2] != "not-found" and r[6] and r[6] not in self._cache
        ]
        slots = asyncio.Semaphore(_WARM_DEPTH)
        took = 0.0

        async def chunk(part: list[list[Any]]) -> None:
            nonlocal took
            t0 = loop.time()
            try:
                await asyncio.gather(*(self._status_row(r, need_reload=False) for r in part))
            except SystemdError:
                pass  # a unit that went away meanwhile: the next status() reports it
            finally:
                took = loop.time() - t0
                slots.release()

        async with asyncio.TaskGroup() as tg:
            for i in range(0, len(rows), _WARM_CHUNK):
                await slots.acquire()
                if loop.time() + took >= ends:
                    break
                tg.create_task(chunk(rows[i : i + _WARM_CHUNK]), name="systemd-warm")

    async def _status_and_job(self, name: str) -> tuple[UnitStatus, int, str]:
        rows = await self._list([name])
        st, job = await self._status_row(rows[0], need_reload=False)  # health only
        return st, job, rows[0][6]

    # -- health ----------------------------------------------------------------------------

    async def wait_healthy(
        self,
        name: str,
        timeout: float,  # noqa: ASYNC109
        *,
        settle: float | None = None,
    ) -> UnitStatus:
        """Wait until ``name`` is active, a oneshot finished, it failed, or ``timeout`` passed.

        Returns the last status either way; the caller decides (``UnitStatus.healthy``).
        Types without a readiness protocol (simple, exec, forking, idle) are "active" from
        the fork on, so ``ExecStart=/bin/false`` would pass: such a unit must also have been
        active for ``settle`` seconds (default ``self.settle``), bounded by ``timeout``.
        A service that systemd restarts on its own meanwhile (``NRestarts`` grew from the
        first read, or it waits in ``auto-restart``) is crash-looping: returned at once,
        its ``restarts`` the growth seen, so the gate fails in a restart, not at ``timeout``.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settle = self.settle if settle is None else settle
        event = asyncio.Event()
        watched = ""
        first: int | None = None
        try:
            while True:
                event.clear()
                st, job, path = await self._status_and_job(name)
                first = st.n_restarts if first is None else first
                if st.n_restarts > first or (watched and st.sub_state == AUTO_RESTART):
                    return replace(st, restarts=max(st.n_restarts - first, 1))
                if path and not watched:
                    watched = path
                    self._watchers.setdefault(path, set()).add(event)
                    continue  # re-read: a change may have slipped in before we watched
                remaining = deadline - loop.time()
                wait = min(remaining, self.poll_interval)
                if settled(st, job):
                    young = await self._settle_left(st, path, settle) if settle > 0 else 0.0
                    if young <= 0:
                        return st
                    wait = min(remaining, young)
                if remaining <= 0:
                    return st
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), wait)
                self._check()
        finally:
            if watched:
                events = self._watchers.get(watched, set())
                events.discard(event)
                if not events:
                    self._watchers.pop(watched, None)

    async def _settle_left(self, st: UnitStatus, path: str, settle: float) -> float:
        """Seconds until an active unit without readiness protocol has been up ``settle``."""
        if st.active_state != "active" or not needs_settle(st.name, st.service_type):
            return 0.0
        usec = await self.get(path, UNIT, "ActiveEnterTimestampMonotonic")
        # systemd and time.monotonic() both read CLOCK_MONOTONIC
        return settle - (time.monotonic() - int(usec) / 1e6)

    async def describe_failure(self, name: str, lines: int = 20) -> str:
        """The unit's status as text, then the last journal lines of its last invocation (or
        a line saying why there are none: no journald, no lines)."""
        rows = await self._list([name])
        path = rows[0][6]
        props: dict[str, Any] = {}
        if path and rows[0][2] != "not-found":
            for iface in (UNIT, SERVICE) if name.endswith(".service") else (UNIT,):
                (all_props,) = await self.call(
                    "GetAll", "s", [iface], path=path, interface=PROPERTIES
                )
                props.update({k: v.value for k, v in all_props.items()})
        text = describe_from_properties(name, rows[0][2], rows[0][3], rows[0][4], props)
        journal = await journal_tail(
            name, lines, user=self.scope is Scope.USER, socket=self.journal_socket,
            invocation=invocation_hex(props.get("InvocationID")),
        )  # fmt: skip
        return f"{text}\n\n{journal}"
