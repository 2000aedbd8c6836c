"""The systemd actuator: read unit state and run jobs over one persistent D-Bus connection.

Everything goes through ``org.freedesktop.systemd1`` (no ``systemctl`` on the hot path: on
Flatcar the agent runs in a container with only the D-Bus socket). Jobs are awaited through
``JobRemoved`` signals: every ``JobRemoved`` is recorded as it arrives, so a job that finishes
before its method reply is processed is still found by its path. Health waits wake on
``PropertiesChanged`` signals with a bounded poll as a fallback. Connection plumbing and the
systemd 252 private-socket quirk live in ``dbus.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dbus_fast import Message, MessageType
from dbus_fast.aio import MessageBus

from reconciler.actuators.dbus import (
    CallFailed,
    Endpoint,
    Scope,
    add_match,
    call,
    open_bus,
    resolve_endpoint,
)
from reconciler.actuators.describe import describe_from_properties, journal_tail
from reconciler.actuators.jobs import JobTracker
from reconciler.actuators.unitstatus import UnitStatus, not_found, settled, unit_path
from reconciler.errors import SystemdError

__all__ = ["Scope", "Systemd", "UnitStatus", "unit_path"]

MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
PROPERTIES = "org.freedesktop.DBus.Properties"
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")

_NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
# How long a unit without readiness notification must stay active to count as started,
# unless its role entry says otherwise (``settle:``). /bin/false, a missing binary or
# `sh -c 'exit 1'` die 4-27 ms after activation even under load (bench/settle.py), so 0.1 s
# catches them with margin; slower crashers (Python at import: up to 133 ms) need their
# own, longer ``settle`` or, better, Type=notify/exec.
DEFAULT_SETTLE = 0.1
_NO_READINESS = frozenset({"simple", "exec", "forking", "idle"})
_JOB_CHECK = 5.0  # seconds between checks that a job we wait for still exists
_POLL_FALLBACK = 1.0  # seconds between status reads in wait_healthy when no signal arrives
_WARM_CHUNK = 3  # units whose properties warm() reads at a time...
_WARM_DEPTH = 2  # ...with this many chunks in flight
_LOADED = "loaded"
# Cached per unit until a signal says the unit (or the manager) changed. NeedDaemonReload is
# never signalled (systemd compares file mtimes when asked), so it is always read fresh.
_UNIT_PROPS = ("UnitFileState", "InvocationID")
_SERVICE_PROPS = ("MainPID", "Result", "Type", "RemainAfterExit")


def _from_cache(row: list[Any], cached: tuple[Any, ...], need_reload: bool) -> UnitStatus:
    name, _desc, load, active, sub = row[:5]
    file_state, invocation = cached[:2]
    main_pid, result, stype, rae = cached[2:] if len(cached) > 2 else (0, "", "", False)
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
    )


class Systemd:
    """One scope's systemd manager over one D-Bus connection (see module docstring)."""

    def __init__(self, bus: MessageBus, endpoint: Endpoint, scope: Scope) -> None:
        self.scope = scope
        self.endpoint = endpoint
        self.unit_dir: Path = endpoint.unit_dir
        self.mutating_calls = 0
        self.poll_interval = _POLL_FALLBACK  # wait_healthy re-reads at least this often
        self.settle = DEFAULT_SETTLE  # see wait_healthy
        self.journal_socket = JOURNAL_SOCKET  # describe_failure asks journalctl if it exists
        self._bus = bus
        self.job_check_interval = _JOB_CHECK  # safety net for a lost JobRemoved (jobs.py)
        self._jobs = JobTracker()
        self._watchers: dict[str, set[asyncio.Event]] = {}
        # Property reads are ~0.17 ms each; 50 units x 6 of them took 45 ms per status().
        # Values are kept until a PropertiesChanged for the unit or a manager-wide signal;
        # the generation counters (manager-wide, and per unit: a signal about another unit
        # says nothing about this one) keep a read that raced with a signal out of the cache.
        self._cache: dict[str, tuple[Any, ...]] = {}
        self._generation = 0
        self._unit_generation: dict[str, int] = {}
        self._refs: set[str] = set()
        self._lost: SystemdError | None = None
        self._closing = False
        self._monitor: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        scope: Scope,
        *,
        address: str | None = None,
        unit_dir: Path | None = None,
        runtime_dir: str | None = None,
        home: str | None = None,
    ) -> Systemd:
        endpoint = resolve_endpoint(
            scope, address=address, unit_dir=unit_dir, runtime_dir=runtime_dir, home=home
        )
        bus = await open_bus(endpoint)
        self = cls(bus, endpoint, scope)
        bus.add_message_handler(self._on_message)
        try:
            if not endpoint.peer_to_peer:
                # A bus daemon only forwards signals somebody asked for; naming the sender
                # keeps other clients' look-alike broadcasts out.
                await add_match(
                    bus,
                    "type='signal',sender='org.freedesktop.systemd1',"
                    "interface='org.freedesktop.systemd1.Manager'",
                )
                await add_match(
                    bus,
                    "type='signal',sender='org.freedesktop.systemd1',"
                    "interface='org.freedesktop.DBus.Properties',"
                    f"member='PropertiesChanged',path_namespace='{MANAGER_PATH}'",
                )
            await call(bus, path=MANAGER_PATH, interface=MANAGER, member="Subscribe")
        except BaseException:
            bus.disconnect()
            raise
        self._monitor = asyncio.create_task(self._watch_disconnect(), name="systemd-dbus-monitor")
        return self

    # -- signals ---------------------------------------------------------------------------

    def _on_message(self, msg: Message) -> None:
        if msg.message_type is not MessageType.SIGNAL:
            return
        if msg.member == "JobRemoved" and msg.interface == MANAGER:
            _id, job, _unit, result = msg.body
            self._jobs.removed(job, result)
        elif msg.member == "PropertiesChanged" and msg.path:
            self._changed(msg.path)
            for event in self._watchers.get(msg.path, ()):
                event.set()
        elif msg.interface != MANAGER:
            return
        elif msg.member in ("UnitNew", "UnitRemoved"):
            self._changed(msg.body[1])
            if msg.member == "UnitRemoved":
                self._refs.discard(msg.body[1])
        elif msg.member in ("Reloading", "UnitFilesChanged"):
            self._generation += 1
            self._cache.clear()

    def _changed(self, path: str) -> None:
        self._unit_generation[path] = self._unit_generation.get(path, 0) + 1
        self._cache.pop(path, None)

    def _generation_of(self, path: str) -> tuple[int, int]:
        return self._generation, self._unit_generation.get(path, 0)

    async def _watch_disconnect(self) -> None:
        try:
            await self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            error = SystemdError(f"D-Bus connection to {self.endpoint.address} closed")
        except Exception as e:
            error = SystemdError(f"D-Bus connection to {self.endpoint.address} lost: {e}")
        self._lost = error
        self._cache.clear()
        self._jobs.fail_all(error)
        for events in self._watchers.values():
            for event in events:
                event.set()

    def _check(self) -> None:
        if self._lost is not None:
            raise SystemdError(str(self._lost))

    async def _call(
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

    async def _get(self, path: str, interface: str, prop: str) -> Any:
        (variant,) = await self._call(
            "Get", "ss", [interface, prop], path=path, interface=PROPERTIES
        )
        return variant.value

    async def _list(self, names: Sequence[str]) -> list[list[Any]]:
        """ListUnitsByNames rows; a name systemd rejects outright becomes a not-found row."""
        try:
            (rows,) = await self._call("ListUnitsByNames", "as", [list(names)])
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
        return None if cached is None else _from_cache(row, cached, False)

    async def _status_row(self, row: list[Any], need_reload: bool = True) -> tuple[UnitStatus, int]:
        name, _desc, load, active, sub, _following, path, job_id = row[:8]
        if load == "not-found" or not path:
            return UnitStatus(name, load, active, sub, "", "", 0, "", "", False), job_id
        cached = self._cache.get(path)
        reload_read = [self._get(path, UNIT, "NeedDaemonReload")] if need_reload else []
        if cached is None:
            generation = self._generation_of(path)
            if load == _LOADED and not self.endpoint.peer_to_peer and path not in self._refs:
                await self._ref(path)
            fetched = await asyncio.gather(
                *reload_read,
                *(self._get(path, UNIT, p) for p in _UNIT_PROPS),
                *(
                    self._get(path, SERVICE, p)
                    for p in (_SERVICE_PROPS if name.endswith(".service") else ())
                ),
            )
            cached = tuple(fetched[len(reload_read) :])
            if generation == self._generation_of(path):  # no signal since we asked: still true
                self._cache[path] = cached
        else:
            fetched = [await reload_read[0]] if reload_read else []
        return _from_cache(row, cached, bool(fetched[0]) if reload_read else False), job_id

    async def _ref(self, path: str) -> None:
        """Keep the unit loaded while we are connected (systemd tracks our bus name).

        An unreferenced inactive unit is garbage-collected after every message and re-read
        from disk by the next (6 property reads: 4.2 ms, not 1.2 ms), emptying our cache.
        Needs a bus daemon: on the private socket there is no name to track (InvalidArgs).
        """
        try:
            await self._call("Ref", path=path, interface=UNIT)
        except CallFailed:
            return
        self._refs.add(path)

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
                return bool(await self._get(unit_path(name), UNIT, "NeedDaemonReload"))
            except CallFailed:
                return False  # unloaded meanwhile: nothing loaded to be stale

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

    # -- changing --------------------------------------------------------------------------

    async def daemon_reload(self) -> None:
        self.mutating_calls += 1
        await self._call("Reload")

    async def _run_job(self, member: str, name: str) -> str:
        self.mutating_calls += 1
        if member != "StopUnit" and not self.endpoint.peer_to_peer:
            # keep the unit's result and InvocationID readable after a oneshot finished
            path = unit_path(name)
            if path not in self._refs:
                await self._ref(path)
        (job,) = await self._call(member, "ss", [name, "replace"])
        return await self._jobs.wait(job, self.job_check_interval, self._job_exists)

    async def _job_exists(self, job: str) -> bool:
        try:
            await self._get(job, "org.freedesktop.systemd1.Job", "State")
        except CallFailed:
            return False
        return True

    async def start(self, name: str) -> str:
        """StartUnit; returns the job result: done|failed|canceled|timeout|dependency|skipped
        (|invalid, e.g. ReloadUnit of an inactive unit). D-Bus errors raise SystemdError."""
        return await self._run_job("StartUnit", name)

    async def stop(self, name: str) -> str:
        """StopUnit; a unit systemd does not know is already stopped (``done``)."""
        try:
            return await self._run_job("StopUnit", name)
        except CallFailed as e:
            if e.name == _NO_SUCH_UNIT:
                return "done"
            raise

    async def restart(self, name: str) -> str:
        return await self._run_job("RestartUnit", name)

    async def reload(self, name: str) -> str:
        """ReloadUnit (ExecReload=): the main process keeps running. Fails if inactive."""
        return await self._run_job("ReloadUnit", name)

    async def reload_or_restart(self, name: str) -> str:
        return await self._run_job("ReloadOrRestartUnit", name)

    async def enable(self, names: Sequence[str], *, reload: bool = True) -> None:
        """EnableUnitFiles (persistent, force), then a daemon-reload if a symlink changed.

        ``reload=False`` skips that reload for a caller that runs ``daemon_reload`` next
        anyway; until then status() still reports the old UnitFileState.
        """
        if not names:
            return
        self.mutating_calls += 1
        _carries_install_info, changes = await self._call(
            "EnableUnitFiles", "asbb", [list(names), False, True]
        )
        if reload:
            await self._reload_after_install(changes)

    async def disable(self, names: Sequence[str], *, reload: bool = True) -> None:
        """DisableUnitFiles, then a daemon-reload if a symlink changed (see ``enable``)."""
        if not names:
            return
        self.mutating_calls += 1
        (changes,) = await self._call("DisableUnitFiles", "asb", [list(names), False])
        if reload:
            await self._reload_after_install(changes)

    async def _reload_after_install(self, changes: list[Any]) -> None:
        # Like `systemctl enable`: the manager caches UnitFileState and dependencies until a
        # reload, so without one the next status() would still say "disabled" and a no-op
        # pass would enable again. Reading the state from disk instead (GetUnitFileState)
        # costs 3.5 ms per unit against 0.17 ms for the cached property.
        if changes:
            await self.daemon_reload()

    async def reset_failed(self, name: str) -> None:
        self.mutating_calls += 1
        try:
            await self._call("ResetFailedUnit", "s", [name])
        except CallFailed as e:
            if e.name != _NO_SUCH_UNIT:
                raise

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
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        settle = self.settle if settle is None else settle
        event = asyncio.Event()
        watched = ""
        try:
            while True:
                event.clear()
                st, job, path = await self._status_and_job(name)
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
        if st.active_state != "active" or st.service_type not in _NO_READINESS:
            return 0.0
        usec = await self._get(path, UNIT, "ActiveEnterTimestampMonotonic")
        # systemd and time.monotonic() both read CLOCK_MONOTONIC
        return settle - (time.monotonic() - int(usec) / 1e6)

    async def describe_failure(self, name: str, lines: int = 20) -> str:
        """The unit's status as text, plus its last journal lines when journald is running."""
        rows = await self._list([name])
        path = rows[0][6]
        props: dict[str, Any] = {}
        if path and rows[0][2] != "not-found":
            for iface in (UNIT, SERVICE) if name.endswith(".service") else (UNIT,):
                (all_props,) = await self._call(
                    "GetAll", "s", [iface], path=path, interface=PROPERTIES
                )
                props.update({k: v.value for k, v in all_props.items()})
        text = describe_from_properties(name, rows[0][2], rows[0][3], rows[0][4], props)
        journal = await journal_tail(
            name, lines, user=self.scope is Scope.USER, socket=self.journal_socket
        )
        return f"{text}\n\n{journal}" if journal else text

    async def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._bus.disconnect()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._bus.wait_for_disconnect(), 5)  # type: ignore[no-untyped-call]
        if self._monitor is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._monitor, 5)

    async def __aenter__(self) -> Systemd:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
