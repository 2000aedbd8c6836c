"""Health-checked service registration in etcd (what the old Vault "sidekick" did, declared).

For each unit whose role entry has ``register:``, a :class:`ServiceRegistrar` runs the
service's health check every ``interval``. While it passes, the node keeps
``<prefix>/services/<name>/<node>`` = ``{"address", "port", "since", "node"}`` bound to a lease
the etcd client keeps alive; the moment a check fails the lease is revoked (etcd deletes the
key at once) and a ``service_unhealthy`` event is emitted, ``service_healthy`` when it
passes again. If the agent dies, nobody keeps the lease alive and etcd drops the key within
the lease TTL by itself.

Checks share one tiny interface, ``async def check() -> bool`` (an exception or timeout
counts as a failure): HTTP (2xx, optionally a JSON body containing ``expect_json``), TCP
connect, and "unit is active" through a callable the agent passes in (it owns the systemd
connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp

from reconciler import keys, log
from reconciler.models import CheckKind, HealthCheck, NodeSpec, Registration
from reconciler.notify.events import Event, EventKind

if TYPE_CHECKING:
    from reconciler.etcd.client import Etcd, Lease

UnitActive = Callable[[str], Awaitable[bool]]


class Check(Protocol):
    async def check(self) -> bool: ...


def json_subset(expected: Any, actual: Any) -> bool:
    """True when ``actual`` holds everything in ``expected``: dicts recursively by key, other
    values by equality, with bools never equal to numbers (``{"sealed": 0}`` is not
    ``{"sealed": false}``)."""
    if isinstance(expected, Mapping):
        return isinstance(actual, Mapping) and all(
            k in actual and json_subset(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, (list, tuple)):
        return (
            isinstance(actual, (list, tuple))
            and len(expected) == len(actual)
            and all(json_subset(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual)


@dataclass
class HttpCheck:
    """GET ``url``; healthy on 2xx and, if ``expect`` is given, a JSON body containing it."""

    url: str
    expect: Mapping[str, Any]
    session: Callable[[], aiohttp.ClientSession]

    async def check(self) -> bool:
        async with self.session().get(self.url, allow_redirects=False) as resp:
            if not 200 <= resp.status < 300:
                return False
            if not self.expect:
                return True
            body = await resp.json(content_type=None)
            return json_subset(self.expect, body)


@dataclass
class TcpCheck:
    """Healthy when a TCP connection to ``host:port`` opens."""

    host: str
    port: int

    async def check(self) -> bool:
        _, writer = await asyncio.open_connection(self.host, self.port)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True


@dataclass
class UnitActiveCheck:
    unit: str
    is_active: UnitActive

    async def check(self) -> bool:
        return bool(await self.is_active(self.unit))


def split_host_port(target: str) -> tuple[str, int]:
    """``127.0.0.1:8200`` or ``[::1]:8200`` -> (host, port)."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"tcp check target {target!r} must look like HOST:PORT")
    return host.strip("[]"), int(port)


def make_check(
    hc: HealthCheck,
    unit: str,
    *,
    session: Callable[[], aiohttp.ClientSession],
    unit_active: UnitActive | None,
) -> Check:
    """The runnable check for a declared one; ValueError if it cannot run on this agent."""
    if hc.kind is CheckKind.HTTP:
        return HttpCheck(hc.target, dict(hc.expect_json), session)
    if hc.kind is CheckKind.TCP:
        return TcpCheck(*split_host_port(hc.target))
    if unit_active is None:
        raise ValueError("a unit_active check needs the agent's systemd connection")
    return UnitActiveCheck(unit, unit_active)


def registrations_of(spec: NodeSpec) -> list[tuple[str, Registration]]:
    """(unit name, registration) for every unit of the spec that declares ``register:``."""
    return [(u.name, u.register) for u in spec.units if u.register is not None]


def lease_ttl(interval: float, *, minimum: int = 3) -> int:
    """Two intervals: a dead agent's registration outlives it by at most that much. The
    minimum rides out an etcd leader election (~1.4 s) with keepalives every TTL/3."""
    return max(minimum, math.ceil(2 * interval))


_FAILED_BECAUSE = {
    CheckKind.HTTP: "status not 2xx or body lacks expect_json",
    CheckKind.TCP: "connection failed",
    CheckKind.UNIT_ACTIVE: "unit is not active",
}


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass(eq=False)
class _Watch:
    unit: str
    reg: Registration
    check: Check
    task: asyncio.Task[None] | None = None
    registered: bool = False
    healthy: bool | None = None
    fails: int = 0  # consecutive failed checks
    announced: bool = False  # service_unhealthy sent for the current failure streak
    reason: str = ""  # why the last check failed, for the event
    since: str = ""  # when it last became healthy; empty until its first passing check
    lease: Lease | None = field(default=None, repr=False)


class ServiceRegistrar:
    """Keeps this node's healthy services registered. Run :meth:`run` in the agent's
    TaskGroup, call :meth:`update` after each applied pass, :meth:`aclose` at shutdown."""

    def __init__(
        self,
        etcd: Etcd,
        *,
        prefix: str,
        node: str,
        address: str,
        emit: Callable[[Event], None] | None = None,
        unit_active: UnitActive | None = None,
        min_ttl: int = 3,
    ) -> None:
        self._etcd = etcd
        self._prefix = prefix
        self._node = node
        self._address = address
        self._emit = emit or (lambda _e: None)
        self._unit_active = unit_active
        self._min_ttl = min_ttl
        self._revision = ""
        self._watches: dict[str, _Watch] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._stop = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._log = log.get("swarmkeeper.services").bind(node=node)

    # -- the agent-facing API ---------------------------------------------------------------

    def status(self) -> dict[str, bool]:
        """Service name -> registered in etcd right now (for status reports and metrics)."""
        return {name: w.registered for name, w in self._watches.items()}

    async def update(
        self, registrations: Iterable[tuple[str, Registration]], *, revision: str = ""
    ) -> None:
        """Make the running set match ``registrations`` ((unit, registration) pairs, e.g.
        :func:`registrations_of(spec)`). Unchanged services keep running undisturbed; removed
        ones are deregistered before this returns; changed ones restart."""
        self._revision = revision or self._revision
        wanted: dict[str, tuple[str, Registration]] = {}
        for unit, reg in registrations:
            if reg.name in wanted:
                self._log.warning("services.duplicate", service=reg.name, unit=unit)
            wanted[reg.name] = (unit, reg)
        for name, w in list(self._watches.items()):
            if wanted.get(name) != (w.unit, w.reg):
                await self._stop_watch(self._watches.pop(name))
        for name, (unit, reg) in wanted.items():
            if name in self._watches:
                continue
            try:
                check = make_check(
                    reg.check, unit, session=self._http, unit_active=self._unit_active
                )
            except ValueError as e:
                self._log.error("services.cannot_check", service=name, unit=unit, error=str(e))
                continue
            w = _Watch(unit, reg, check)
            self._watches[name] = w
            if self._tg is not None:
                self._start(w)

    async def run(self) -> None:
        """Check and register until :meth:`aclose`."""
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                for w in self._watches.values():
                    self._start(w)
                await self._stop.wait()
                for w in list(self._watches.values()):
                    await self._stop_watch(w)
        finally:
            self._tg = None
            if self._session is not None:
                await self._session.close()
                self._session = None

    async def aclose(self) -> None:
        """Deregister everything (revoke the leases) and make :meth:`run` return."""
        self._stop.set()
        if self._tg is None:
            for w in list(self._watches.values()):
                await self._stop_watch(w)
            if self._session is not None:
                await self._session.close()
                self._session = None

    # -- inside ----------------------------------------------------------------------------

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    def _start(self, w: _Watch) -> None:
        assert self._tg is not None
        w.task = self._tg.create_task(self._loop(w), name=f"service:{w.reg.name}")

    async def _stop_watch(self, w: _Watch) -> None:
        if w.task is not None and not w.task.done():
            w.task.cancel()
            await asyncio.wait([w.task])
        await self._deregister(w)

    def _key(self, w: _Watch) -> str:
        return keys.services(self._prefix, w.reg.name, self._node)

    async def _loop(self, w: _Watch) -> None:
        loop = asyncio.get_running_loop()
        interval = max(0.05, w.reg.interval)
        while True:
            started = loop.time()
            try:
                if await self._probe(w, min(interval, 10.0)):
                    await self._on_pass(w)
                else:
                    await self._on_fail(w)
            except Exception as e:  # a bug here must not take the agent's TaskGroup down
                self._log.error("services.bug", service=w.reg.name, error=repr(e))
            # wake early if the lease is lost (etcd outage longer than the TTL): re-register
            sleep = max(0.0, started + interval - loop.time())
            lease = w.lease
            if lease is not None and lease.alive:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lease.wait_lost(), sleep)
            else:
                await asyncio.sleep(sleep)

    async def _probe(self, w: _Watch, limit: float) -> bool:
        try:
            async with asyncio.timeout(limit):
                ok = await w.check.check()
            w.reason = "" if ok else _FAILED_BECAUSE[w.reg.check.kind]
            return ok
        except Exception as e:  # any failure to check is a failed check (e.g. systemd gone)
            w.reason = f"no answer within {limit:g}s" if isinstance(e, TimeoutError) else _short(e)
            self._log.debug("services.check_failed", service=w.reg.name, error=repr(e))
            return False

    async def _on_pass(self, w: _Watch) -> None:
        if w.healthy is not True:
            w.since = _now_iso()
        if w.announced:
            self._event(w, EventKind.SERVICE_HEALTHY, "check passes again")
        w.healthy, w.fails, w.announced = True, 0, False
        try:
            await self._register(w)
        except Exception as e:  # etcd trouble: the lease lapses by itself; retry next interval
            w.registered = False
            self._log.warning("services.register_failed", service=w.reg.name, error=repr(e))

    async def _on_fail(self, w: _Watch) -> None:
        await self._deregister(w)  # first: the key must go at once
        # A service that was healthy is reported at once; one that has never passed (just
        # started, or the agent just started) gets one more interval before we say so.
        w.healthy = False
        w.fails += 1
        if not w.announced and w.fails >= (1 if w.since else 2):
            w.announced = True
            self._event(
                w, EventKind.SERVICE_UNHEALTHY, f"{w.reg.check.kind} check failed: {w.reason}"
            )

    async def _register(self, w: _Watch) -> None:
        key = self._key(w)
        lease = w.lease
        if lease is not None and lease.alive:
            kv = await self._etcd.get(key)
            if kv is not None and kv.lease == lease.id:
                w.registered = True
                return
        else:
            lease = await self._etcd.lease(lease_ttl(w.reg.interval, minimum=self._min_ttl))
            w.lease = lease
        value = {"address": self._address, "port": w.reg.port, "since": w.since, "node": self._node}
        await self._etcd.put(key, json.dumps(value, sort_keys=True), lease=lease)
        if not w.registered:
            self._log.info("services.registered", service=w.reg.name, key=key)
        w.registered = True

    async def _deregister(self, w: _Watch) -> None:
        lease, w.lease = w.lease, None
        was = w.registered
        w.registered = False
        if lease is None:
            return
        try:
            # revoking deletes every key bound to the lease in one step
            await asyncio.shield(lease.revoke())
            if was:
                self._log.info("services.deregistered", service=w.reg.name)
        except Exception as e:  # it will expire within its TTL anyway
            lease.mark_lost()
            self._log.warning("services.revoke_failed", service=w.reg.name, error=repr(e))

    def _event(self, w: _Watch, kind: EventKind, message: str) -> None:
        event = Event.of(
            kind,
            self._node,
            revision=self._revision,
            unit=w.unit,
            message=f"{w.reg.name}: {message}",
            details={"service": w.reg.name, "port": w.reg.port, "check": w.reg.check.target},
        )
        with contextlib.suppress(Exception):  # emit is the agent's; it must not stop checks
            self._emit(event)
