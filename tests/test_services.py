"""Service registration against a real etcd and real local services whose health flips."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from reconciler import cli, keys
from reconciler.actuators.systemd import Scope, Systemd
from reconciler.agent.services import (
    HttpCheck,
    ServiceRegistrar,
    TcpCheck,
    UnitActiveCheck,
    json_subset,
    lease_ttl,
    split_host_port,
)
from reconciler.commands.services import format_table, parse_entries
from reconciler.etcd.client import KV, Etcd
from reconciler.models import CheckKind, HealthCheck, Registration
from reconciler.notify.events import Event, EventKind
from reconciler.notify.hub import Notifications
from reconciler.notify.notifiers import WebhookNotifier
from tests.clihelp import check_schema
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.systemd_user import UserManager
from tests.fixtures.webhook import HookServer

PREFIX = "/sk-test"


@pytest.mark.parametrize(
    ("expected", "actual", "ok"),
    [
        ({"sealed": False}, {"sealed": False, "t": 1}, True),
        ({"sealed": False}, {"sealed": True}, False),
        ({"sealed": False}, {"sealed": 0}, False),  # bool is not a number
        ({"n": 1}, {"n": True}, False),
        ({"sealed": False}, {}, False),
        ({"a": {"b": 2}}, {"a": {"b": 2, "c": 3}}, True),
        ({"a": {"b": 2}}, {"a": {"b": 3}}, False),
        ({"a": [1, 2]}, {"a": [1, 2]}, True),
        ({"a": [1, 2]}, {"a": [1, 2, 3]}, False),
        ({"a": 1}, [1], False),
        ({}, {"anything": 1}, True),
    ],
)
def test_json_subset(expected: object, actual: object, ok: bool) -> None:
    assert json_subset(expected, actual) is ok


@pytest.mark.parametrize(
    ("target", "result"),
    [("127.0.0.1:8200", ("127.0.0.1", 8200)), ("[::1]:53", ("::1", 53)), ("db:5432", ("db", 5432))],
)
def test_split_host_port(target: str, result: tuple[str, int]) -> None:
    assert split_host_port(target) == result


@pytest.mark.parametrize("bad", ["127.0.0.1", ":80", "host:", "host:99999", "host:http"])
def test_split_host_port_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(bad)


@pytest.mark.parametrize(("interval", "ttl"), [(0.2, 3), (1.0, 3), (15.0, 30), (2.5, 5)])
def test_lease_ttl(interval: float, ttl: int) -> None:
    assert lease_ttl(interval) == ttl


async def test_tcp_check_against_a_real_listening_socket() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    check = TcpCheck("127.0.0.1", port)
    assert await check.check() is True
    server.close()
    await server.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        await check.check()


async def test_http_check_status_and_expect_json() -> None:
    import aiohttp

    async with HookServer() as srv, aiohttp.ClientSession() as session:
        check = HttpCheck(srv.url("/health"), {"sealed": False}, lambda: session)
        plain = HttpCheck(srv.url("/health"), {}, lambda: session)
        assert await check.check() is True
        srv.health = {"sealed": True}
        assert await check.check() is False
        assert await plain.check() is True
        srv.health_status = 503
        assert await plain.check() is False


async def test_unit_active_check_asks_the_agent() -> None:
    asked: list[str] = []

    async def is_active(unit: str) -> bool:
        asked.append(unit)
        return unit == "vault.service"

    assert await UnitActiveCheck("vault.service", is_active).check() is True
    assert await UnitActiveCheck("other.service", is_active).check() is False
    assert asked == ["vault.service", "other.service"]


# -- the registrar against real etcd -------------------------------------------------------


def http_reg(url: str, interval: float, name: str = "vault", port: int = 8200) -> Registration:
    check = HealthCheck(CheckKind.HTTP, url, (("sealed", False),))
    return Registration(name=name, port=port, check=check, interval=interval)


@asynccontextmanager
async def running(reg: ServiceRegistrar) -> AsyncIterator[ServiceRegistrar]:
    task = asyncio.create_task(reg.run(), name="registrar")
    try:
        yield reg
    finally:
        await reg.aclose()
        await asyncio.wait_for(task, 10)


async def wait_until(pred: Callable[[], object], within: float, what: str) -> float:
    """Poll an async predicate every 20 ms; returns the seconds it took."""
    t0 = time.monotonic()
    while True:
        res = pred()
        if asyncio.iscoroutine(res):
            res = await res
        if res:
            return time.monotonic() - t0
        if time.monotonic() - t0 > within:
            raise AssertionError(f"not {what} within {within}s")
        await asyncio.sleep(0.02)


async def test_key_follows_health_and_events_are_emitted(etcd_server: EtcdServer) -> None:
    events: list[Event] = []
    interval = 0.4
    key = keys.services(PREFIX, "vault", "node-1")
    async with (
        HookServer() as srv,
        await Etcd.connect([etcd_server.endpoint]) as etcd,
        await Etcd.connect([etcd_server.endpoint]) as observer,
    ):

        async def present() -> KV | None:
            return await observer.get(key)

        async def absent() -> bool:
            return await observer.get(key) is None

        # events go to a list and, as the agent wires it, through a real hub to a webhook
        hub = Notifications([WebhookNotifier(srv.url("/hook"), "hook")], coalesce_window=0.05)
        hub_task = asyncio.create_task(hub.run())

        def emit(e: Event) -> None:
            events.append(e)
            hub.emit(e)

        reg = ServiceRegistrar(etcd, prefix=PREFIX, node="node-1", address="10.0.0.5", emit=emit)
        await reg.update(
            [("vault.service", http_reg(srv.url("/health"), interval))], revision="c0ffee"
        )
        async with running(reg):
            await wait_until(present, 3.0, "registered")
            kv = await observer.get(key)
            assert kv is not None and kv.lease != 0
            value = json.loads(kv.value)
            assert value["address"] == "10.0.0.5" and value["port"] == 8200
            assert value["node"] == "node-1" and value["since"].endswith("+00:00")
            assert reg.status() == {"vault": True}

            srv.health = {"sealed": True}
            took = await wait_until(absent, 3.0, "deregistered")
            assert took <= interval + 0.5, took  # within one interval of the check failing
            await wait_until(lambda: events, 1.0, "event emitted")
            assert [e.kind for e in events] == [EventKind.SERVICE_UNHEALTHY]
            assert events[0].unit == "vault.service" and events[0].revision == "c0ffee"
            assert events[0].node == "node-1" and "vault" in events[0].message
            assert "http check failed" in events[0].message

            srv.health = {"sealed": False}
            await wait_until(present, 3.0, "registered again")
            await wait_until(lambda: len(events) == 2, 1.0, "event emitted")
            again = await observer.get(key)
            assert again is not None and again.lease != kv.lease
            assert [e.kind for e in events] == [
                EventKind.SERVICE_UNHEALTHY,
                EventKind.SERVICE_HEALTHY,
            ]
            # a healthy service is not re-put every interval: the key stays at one revision
            await asyncio.sleep(interval * 2.5)
            same = await observer.get(key)
            assert same is not None and same.mod_revision == again.mod_revision
        # aclose deregisters
        assert await observer.get(key) is None
        await hub.aclose()
        await hub_task
    hooks = srv.bodies("/hook")
    assert [(h["kind"], h["unit"], h["node"]) for h in hooks] == [
        ("service_unhealthy", "vault.service", "node-1"),
        ("service_healthy", "vault.service", "node-1"),
    ]
    assert hooks[0]["details"]["service"] == "vault" and hooks[0]["severity"] == "error"


async def test_update_adds_removes_and_changes_registrations(etcd_server: EtcdServer) -> None:
    tcp_server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    tcp_port = tcp_server.sockets[0].getsockname()[1]
    tcp = Registration("db", 5432, HealthCheck(CheckKind.TCP, f"127.0.0.1:{tcp_port}"), 0.3)
    async with (
        HookServer() as srv,
        await Etcd.connect([etcd_server.endpoint]) as etcd,
    ):
        vault = http_reg(srv.url("/health"), 0.3)
        reg = ServiceRegistrar(etcd, prefix=PREFIX, node="n2", address="10.0.0.6")

        async def keys() -> set[str]:
            kvs, _ = await etcd.get_prefix(f"{PREFIX}/services/")
            return {kv.key.decode() for kv in kvs}

        async with running(reg):
            await reg.update([("vault.service", vault)])
            await wait_until(lambda: keys_are(keys, {f"{PREFIX}/services/vault/n2"}), 3, "vault")
            await reg.update([("vault.service", vault), ("db.service", tcp)])
            both = {f"{PREFIX}/services/vault/n2", f"{PREFIX}/services/db/n2"}
            await wait_until(lambda: keys_are(keys, both), 3, "both")
            await reg.update([("db.service", tcp)])
            assert await keys() == {f"{PREFIX}/services/db/n2"}  # removed before update returns
            moved = Registration("db", 6543, tcp.check, 0.3)
            await reg.update([("db.service", moved)])
            await wait_until(lambda: port_is(etcd, f"{PREFIX}/services/db/n2", 6543), 3, "port")

            tcp_server.close()  # the tcp service goes away: its key goes too
            await tcp_server.wait_closed()
            await wait_until(lambda: keys_are(keys, set()), 3, "db gone")


async def test_aclose_after_run_was_cancelled_still_deregisters(etcd_server: EtcdServer) -> None:
    """The agent's order: its TaskGroup cancels run(), then _shutdown calls aclose()."""
    async with HookServer() as srv, await Etcd.connect([etcd_server.endpoint]) as etcd:
        key = keys.services(PREFIX, "vault", "n5")
        reg = ServiceRegistrar(etcd, prefix=PREFIX, node="n5", address="10.0.0.5")
        await reg.update([("vault.service", http_reg(srv.url("/health"), 5.0))])
        task = asyncio.create_task(reg.run())
        await wait_until(lambda: etcd.get(key), 3.0, "registered")
        task.cancel()
        await asyncio.wait([task])
        assert await etcd.get(key) is not None  # cancelling alone leaves it to the lease TTL
        await reg.aclose()
        assert await etcd.get(key) is None  # aclose revoked it at once


async def test_a_check_that_raises_counts_as_failed_and_never_stops_the_registrar(
    etcd_server: EtcdServer,
) -> None:
    """E.g. the agent's systemd connection dropped: SystemdError out of unit_active."""
    from reconciler.errors import SystemdError

    broken = False

    async def unit_active(unit: str) -> bool:
        if broken:
            raise SystemdError("D-Bus connection lost")
        return True

    events: list[Event] = []
    async with await Etcd.connect([etcd_server.endpoint]) as etcd:
        key = keys.services(PREFIX, "x", "n6")
        reg = ServiceRegistrar(
            etcd,
            prefix=PREFIX,
            node="n6",
            address="10.0.0.6",
            emit=events.append,
            unit_active=unit_active,
        )
        await reg.update(
            [("x.service", Registration("x", 1, HealthCheck(CheckKind.UNIT_ACTIVE), 0.2))]
        )
        task = asyncio.create_task(reg.run())
        await wait_until(lambda: etcd.get(key), 3.0, "registered")
        broken = True
        await wait_until(lambda: events, 3.0, "unhealthy")
        assert await etcd.get(key) is None
        assert "D-Bus connection lost" in events[0].message
        await asyncio.sleep(0.5)
        assert not task.done()  # still checking
        broken = False
        await wait_until(lambda: etcd.get(key), 3.0, "registered again")
        await reg.aclose()
        await task


async def keys_are(keys: Callable[[], object], want: set[str]) -> bool:
    got = keys()
    assert asyncio.iscoroutine(got)
    return bool(await got == want)


async def port_is(etcd: Etcd, key: str, port: int) -> bool:
    kv = await etcd.get(key)
    return kv is not None and json.loads(kv.value)["port"] == port


async def test_unit_active_registration_without_systemd_handle_is_skipped(
    etcd_server: EtcdServer,
) -> None:
    async with await Etcd.connect([etcd_server.endpoint]) as etcd:
        reg = ServiceRegistrar(etcd, prefix=PREFIX, node="n3", address="10.0.0.7")
        ua = Registration("x", 1, HealthCheck(CheckKind.UNIT_ACTIVE), 0.2)
        await reg.update([("x.service", ua)])
        assert reg.status() == {}


async def test_unit_active_registration_follows_a_real_systemd_unit(
    etcd_server: EtcdServer, systemd_user: UserManager
) -> None:
    """Wired as the agent wires it: unit_active asks the agent's systemd connection."""
    (systemd_user.unit_dir / "sleeper.service").write_text("[Service]\nExecStart=/bin/sleep 600\n")
    await asyncio.to_thread(systemd_user.systemctl, "daemon-reload", check=True)
    sd = await Systemd.connect(
        Scope.USER, runtime_dir=str(systemd_user.runtime_dir), home=str(systemd_user.home)
    )

    async def unit_active(name: str) -> bool:
        return (await sd.status([name]))[name].active_state == "active"

    events: list[Event] = []
    key = keys.services(PREFIX, "sleeper", "n4")
    ua = Registration("sleeper", 7000, HealthCheck(CheckKind.UNIT_ACTIVE), 0.3)
    try:
        async with await Etcd.connect([etcd_server.endpoint]) as etcd:

            async def present() -> bool:
                return await etcd.get(key) is not None

            async def absent() -> bool:
                return await etcd.get(key) is None

            reg = ServiceRegistrar(
                etcd,
                prefix=PREFIX,
                node="n4",
                address="10.0.0.8",
                emit=events.append,
                unit_active=unit_active,
            )
            await reg.update([("sleeper.service", ua)])
            async with running(reg):
                # never active: reported unhealthy after its second failed check, not the first
                took = await wait_until(lambda: events, 2.0, "unhealthy at start")
                assert took >= 0.25, took
                assert not await present()
                await asyncio.to_thread(
                    systemd_user.systemctl, "start", "sleeper.service", check=True
                )
                await wait_until(present, 3.0, "registered after start")
                await asyncio.to_thread(
                    systemd_user.systemctl, "stop", "sleeper.service", check=True
                )
                await wait_until(absent, 0.3 + 0.5, "deregistered after stop")
                await wait_until(lambda: len(events) == 3, 1.0, "events")
        assert [e.kind for e in events] == [
            EventKind.SERVICE_UNHEALTHY,
            EventKind.SERVICE_HEALTHY,
            EventKind.SERVICE_UNHEALTHY,
        ]
        assert "unit is not active" in events[2].message
    finally:
        await sd.close()


AGENT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from reconciler.etcd.client import Etcd
    from reconciler.models import CheckKind, HealthCheck, Registration
    from reconciler.agent.services import ServiceRegistrar

    async def main() -> None:
        etcd = await Etcd.connect([sys.argv[1]])
        reg = ServiceRegistrar(etcd, prefix=sys.argv[2], node="victim", address="10.0.0.9")
        check = HealthCheck(CheckKind.TCP, sys.argv[3])
        await reg.update([("db.service", Registration("db", 5432, check, 0.5))])
        await reg.run()

    asyncio.run(main())
    """
)


async def test_registration_expires_after_the_agent_is_killed(etcd_server: EtcdServer) -> None:
    tcp_server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    target = f"127.0.0.1:{tcp_server.sockets[0].getsockname()[1]}"
    key = keys.services(PREFIX, "db", "victim")
    ttl = lease_ttl(0.5)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        AGENT_SCRIPT,
        etcd_server.endpoint,
        PREFIX,
        target,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with await Etcd.connect([etcd_server.endpoint]) as etcd:

            async def present() -> bool:
                return await etcd.get(key) is not None

            async def absent() -> bool:
                return await etcd.get(key) is None

            await wait_until(present, 15.0, "registered by the subprocess")
            await asyncio.sleep(1.0)  # let a keepalive or two go by
            cmdline = await asyncio.to_thread(Path(f"/proc/{proc.pid}/cmdline").read_bytes)
            assert AGENT_SCRIPT.encode() in cmdline  # it is our child, not a recycled pid
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            await asyncio.wait_for(proc.wait(), 5)
            await wait_until(absent, ttl + 2.0, "expired")
            took = time.monotonic() - killed_at
            # Gone within the TTL, and not at once: keepalives ran every TTL/3, so what removed
            # the key is etcd expiring the lease, not anything the dead process did.
            assert 1.0 < took <= ttl + 1.0, took
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        tcp_server.close()


# -- the command ---------------------------------------------------------------------------


def test_parse_and_format_rows() -> None:
    rows = parse_entries(
        "/p",
        [
            (b"/p/services/vault/m2", b'{"address": "10.0.0.2", "port": 8200, "since": "S2"}'),
            (b"/p/services/vault/m1", b'{"address": "10.0.0.1", "port": 8200, "since": "S1"}'),
            (b"/p/services/db/w1", b"garbage"),
        ],
    )
    assert [(r["service"], r["node"]) for r in rows] == [
        ("db", "w1"),
        ("vault", "m1"),
        ("vault", "m2"),
    ]
    assert format_table(rows).splitlines() == [
        "SERVICE  NODE  ADDRESS        SINCE",
        "db       w1    ?:None         ?",
        "vault    m1    10.0.0.1:8200  S1",
        "vault    m2    10.0.0.2:8200  S2",
    ]


def test_services_command_lists_real_registrations(
    etcd_server: EtcdServer, capsys: pytest.CaptureFixture[str]
) -> None:
    async def register() -> None:
        async with HookServer() as srv, await Etcd.connect([etcd_server.endpoint]) as etcd:
            for node, addr in (("m1", "10.0.0.1"), ("m2", "10.0.0.2")):
                reg = ServiceRegistrar(etcd, prefix=PREFIX, node=node, address=addr)
                await reg.update([("vault.service", http_reg(srv.url("/health"), 5.0))])
                task = asyncio.create_task(reg.run())
                await wait_until(
                    lambda n=node: etcd.get(keys.services(PREFIX, "vault", n)), 3, "reg"
                )
                task.cancel()  # no aclose: the keys stay until their lease expires

    asyncio.run(register())
    assert cli.main(["services", "--etcd", etcd_server.endpoint, "--prefix", PREFIX]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["SERVICE", "NODE", "ADDRESS", "SINCE"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["vault", "m1", "10.0.0.1:8200"],
        ["vault", "m2", "10.0.0.2:8200"],
    ]
    assert cli.main(["services", "--json", "--etcd", etcd_server.endpoint, "--prefix", PREFIX]) == 0
    data = check_schema(capsys.readouterr().out, "ServiceList")["items"]
    assert [(d["service"], d["node"], d["port"]) for d in data] == [
        ("vault", "m1", 8200),
        ("vault", "m2", 8200),
    ]
    assert cli.main(["services", "--etcd", etcd_server.endpoint, "--prefix", "/empty"]) == 0
    assert "no services registered" in capsys.readouterr().out
