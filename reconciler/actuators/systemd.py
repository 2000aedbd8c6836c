"""The systemd actuator: read unit state and run jobs over one persistent D-Bus connection.

Everything goes through ``org.freedesktop.systemd1`` (no ``systemctl`` on the hot path: on
Flatcar the agent runs in a container with only the D-Bus socket). Jobs are awaited through
``JobRemoved`` signals: every ``JobRemoved`` is recorded as it arrives, so a job that finishes
before its method reply is processed is still found by its path. Health waits wake on
``PropertiesChanged`` signals with a bounded poll as a fallback. Connection plumbing and the
systemd 252 private-socket quirk live in ``dbus.py``; reading (the status cache, warm-up,
health waits, failure text) in the ``SystemdReader`` each ``Systemd`` owns. This module
connects, tells the reader what signals say, and changes things (jobs, enable).
"""

from __future__ import annotations

import asyncio
import contextlib
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
    candidate_endpoints,
    open_bus,
)
from reconciler.actuators.jobs import JobTracker
from reconciler.actuators.systemdread import (
    MANAGER,
    MANAGER_PATH,
    PROPERTIES,
    SERVICE,
    UNIT,
    SystemdReader,
)
from reconciler.actuators.unitstatus import UnitStatus, unit_path
from reconciler.errors import SystemdError

# The D-Bus names moved to systemdread.py are re-exported: benches and tests import them here.
__all__ = [
    "DEFAULT_SETTLE",
    "MANAGER",
    "MANAGER_PATH",
    "PROPERTIES",
    "SERVICE",
    "UNIT",
    "Scope",
    "Systemd",
    "UnitStatus",
    "unit_path",
]

JOURNAL_SOCKET = Path("/run/systemd/journal/socket")

_NO_SUCH_UNIT = "org.freedesktop.systemd1.NoSuchUnit"
# How long a unit without readiness notification must stay active to count as started,
# unless its role entry says otherwise (``settle:``). /bin/false, a missing binary or
# `sh -c 'exit 1'` die 4-27 ms after activation even under load (bench/settle.py), so 0.1 s
# catches them with margin; slower crashers (Python at import: up to 133 ms) need their
# own, longer ``settle`` or, better, Type=notify/exec.
DEFAULT_SETTLE = 0.1
_JOB_CHECK = 5.0  # seconds between checks that a job we wait for still exists
_POLL_FALLBACK = 1.0  # seconds between status reads in wait_healthy when no signal arrives


async def _open_first(endpoints: Sequence[Endpoint]) -> tuple[Endpoint, MessageBus]:
    """Connect to the first endpoint that answers; all their errors if none does."""
    errors: list[str] = []
    for endpoint in endpoints:
        try:
            return endpoint, await open_bus(endpoint)
        except SystemdError as e:
            errors.append(str(e))
    raise SystemdError("; ".join(errors) or "no D-Bus address to connect to")


class Systemd:
    """One scope's systemd manager over one D-Bus connection (see module docstring)."""

    def __init__(self, bus: MessageBus, endpoint: Endpoint, scope: Scope) -> None:
        self.scope = scope
        self.endpoint = endpoint
        self.unit_dir: Path = endpoint.unit_dir
        self.mutating_calls = 0
        self.reader = SystemdReader(bus, endpoint, scope, settle=DEFAULT_SETTLE,
                                    poll_interval=_POLL_FALLBACK, journal_socket=JOURNAL_SOCKET)  # fmt: skip
        self._bus = bus
        self.job_check_interval = _JOB_CHECK  # safety net for a lost JobRemoved (jobs.py)
        self._jobs = JobTracker()
        # JobRemoved signals seen, and each unit's last one: whoever started the job (a
        # unit's dependency pulls in a oneshot: the engine must not run it a second time)
        self.job_serial = 0
        self._last_job: dict[str, tuple[int, str]] = {}
        self._closing = False
        self._monitor: asyncio.Task[None] | None = None

    # -- reading: the reader's -------------------------------------------------------------

    @property
    def settle(self) -> float:
        """How long a unit without readiness notification must stay active (wait_healthy)."""
        return self.reader.settle

    @settle.setter
    def settle(self, value: float) -> None:
        self.reader.settle = value

    async def status(
        self, names: Sequence[str], *, need_reload: bool = True
    ) -> dict[str, UnitStatus]:
        return await self.reader.status(names, need_reload=need_reload)

    async def need_daemon_reload(self, names: Sequence[str]) -> dict[str, bool]:
        return await self.reader.need_daemon_reload(names)

    async def warm(self, names: Sequence[str], ends: float) -> None:
        await self.reader.warm(names, ends)

    async def wait_healthy(
        self,
        name: str,
        timeout: float,  # noqa: ASYNC109
        *,
        settle: float | None = None,
    ) -> UnitStatus:
        return await self.reader.wait_healthy(name, timeout, settle=settle)

    async def describe_failure(self, name: str, lines: int = 20) -> str:
        return await self.reader.describe_failure(name, lines)

    async def fragment_paths(self, names: Sequence[str]) -> dict[str, str]:
        return await self.reader.fragment_paths(names)

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
        endpoint, bus = await _open_first(
            candidate_endpoints(
                scope, address=address, unit_dir=unit_dir, runtime_dir=runtime_dir, home=home
            )
        )
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
            _id, job, unit, result = msg.body
            self._jobs.removed(job, result)
            self.job_serial += 1
            self._last_job[unit] = (self.job_serial, result)
        elif msg.member == "PropertiesChanged" and msg.path:
            if msg.body[0] == UNIT:
                self.reader.condition(msg.path, msg.body[1])
            self.reader.changed(msg.path, wake=True)
        elif msg.interface != MANAGER:
            return
        elif msg.member in ("UnitNew", "UnitRemoved"):
            self.reader.changed(msg.body[1])
            if msg.member == "UnitRemoved":
                self.reader.refs.discard(msg.body[1])
        elif msg.member in ("Reloading", "UnitFilesChanged"):
            self.reader.reloaded()

    async def _watch_disconnect(self) -> None:
        try:
            await self._bus.wait_for_disconnect()  # type: ignore[no-untyped-call]
            error = SystemdError(f"D-Bus connection to {self.endpoint.address} closed")
        except Exception as e:
            error = SystemdError(f"D-Bus connection to {self.endpoint.address} lost: {e}")
        self.reader.lost(error)
        self._jobs.fail_all(error)

    # -- changing --------------------------------------------------------------------------

    async def daemon_reload(self) -> None:
        self.mutating_calls += 1
        await self.reader.call("Reload")

    async def _run_job(self, member: str, name: str, mode: str = "replace") -> str:
        self.mutating_calls += 1
        if member != "StopUnit" and not self.endpoint.peer_to_peer:
            # keep the unit's result and InvocationID readable after a oneshot finished
            path = unit_path(name)
            if path not in self.reader.refs:
                await self.reader.ref(path)
        (job,) = await self.reader.call(member, "ss", [name, mode])
        return await self._jobs.wait(job, self.job_check_interval, self._job_exists)

    def job_done_since(self, name: str, serial: int) -> str | None:
        """The result of the last job of ``name`` that ended after ``job_serial`` was
        ``serial``, whoever started it; None when none did."""
        last = self._last_job.get(name)
        return last[1] if last is not None and last[0] > serial else None

    async def _job_exists(self, job: str) -> bool:
        try:
            await self.reader.get(job, "org.freedesktop.systemd1.Job", "State")
        except CallFailed:
            return False
        return True

    async def start(self, name: str) -> str:
        """StartUnit; returns the job result: done|failed|canceled|timeout|dependency|skipped
        (|invalid, e.g. ReloadUnit of an inactive unit). D-Bus errors raise SystemdError."""
        return await self._run_job("StartUnit", name)

    async def stop(self, name: str, *, alone: bool = False) -> str:
        """StopUnit; a unit systemd does not know is already stopped (``done``).

        ``alone``: mode ``ignore-dependencies``, so units that require this one keep
        running (giving back a unit that did not run while its dependents did)."""
        try:
            return await self._run_job(
                "StopUnit", name, "ignore-dependencies" if alone else "replace"
            )
        except CallFailed as e:
            if e.name == _NO_SUCH_UNIT:
                return "done"
            raise

    async def restart(self, name: str) -> str:
        return await self._run_job("RestartUnit", name)

    async def queue_restart(self, name: str) -> str:
        """RestartUnit without waiting for the job: returns its path once systemd queued it.

        For the agent's own unit (``reconciler.agent.selfunit``): the job stops the caller, so
        waiting for its ``JobRemoved`` would never end.
        """
        self.mutating_calls += 1
        (job,) = await self.reader.call("RestartUnit", "ss", [name, "replace"])
        return str(job)

    async def reload(self, name: str) -> str:
        """ReloadUnit (ExecReload=): the main process keeps running. Fails if inactive."""
        return await self._run_job("ReloadUnit", name)

    async def enable(self, names: Sequence[str], *, reload: bool = True) -> None:
        """EnableUnitFiles (persistent, force), then a daemon-reload if a symlink changed.

        ``reload=False`` skips that reload for a caller that runs ``daemon_reload`` next
        anyway; until then status() still reports the old UnitFileState.
        """
        if not names:
            return
        self.mutating_calls += 1
        _carries_install_info, changes = await self.reader.call(
            "EnableUnitFiles", "asbb", [list(names), False, True]
        )
        if reload:
            await self._reload_after_install(changes)

    async def disable(self, names: Sequence[str], *, reload: bool = True) -> None:
        """DisableUnitFiles, then a daemon-reload if a symlink changed (see ``enable``)."""
        if not names:
            return
        self.mutating_calls += 1
        (changes,) = await self.reader.call("DisableUnitFiles", "asb", [list(names), False])
        if reload:
            await self._reload_after_install(changes)

    async def mask(self, names: Sequence[str]) -> None:
        """MaskUnitFiles (persistent, force: replaces a file of that name), then a reload."""
        if not names:
            return
        self.mutating_calls += 1
        (changes,) = await self.reader.call("MaskUnitFiles", "asbb", [list(names), False, True])
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
            await self.reader.call("ResetFailedUnit", "s", [name])
        except CallFailed as e:
            if e.name != _NO_SUCH_UNIT:
                raise

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
