"""Reaching the system manager the way ``systemctl`` does: as root its private socket when it is
there, the system bus otherwise, ``--bus-address`` over both; and falling back when the first
candidate does not answer. (The same on a real PID-1 node: tests/test_pid1_node.py.)"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any

import pytest

from reconciler import config
from reconciler.actuators.dbus import (
    SYSTEM_BUS_SOCKET,
    Endpoint,
    Scope,
    candidate_endpoints,
)
from reconciler.actuators.systemd import Systemd
from reconciler.errors import SystemdError, UsageError
from tests.fixtures.systemd_user import UserManager

ETC = Path("/etc/systemd/system")
BUS = Endpoint(f"unix:path={SYSTEM_BUS_SOCKET}", False, ETC)


def _listening(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    return s


def test_system_scope_candidates(tmp_path: Path) -> None:
    private = tmp_path / "private"
    plain = tmp_path / "plain"
    plain.write_text("not a socket")
    sock = _listening(private)
    mine = Endpoint(f"unix:path={private}", True, ETC)
    cases: list[tuple[dict[str, Any], tuple[Endpoint, ...]]] = [
        # root, private socket there: it first, the bus as the fallback
        ({"uid": 0, "private_socket": str(private)}, (mine, BUS)),
        # root, no private socket (or something else at its path): the bus
        ({"uid": 0, "private_socket": str(tmp_path / "missing")}, (BUS,)),
        ({"uid": 0, "private_socket": str(plain)}, (BUS,)),
        # not root: systemd's private socket is root's only
        ({"uid": 1000, "private_socket": str(private)}, (BUS,)),
        # --bus-address wins over both, and says itself whether it is a private socket
        (
            {"uid": 0, "private_socket": str(private), "address": "unix:path=/run/dbus/x"},
            (Endpoint("unix:path=/run/dbus/x", False, ETC),),
        ),
        (
            {"uid": 1000, "address": "unix:path=/n/run/systemd/private", "unit_dir": Path("/u")},
            (Endpoint("unix:path=/n/run/systemd/private", True, Path("/u")),),
        ),
        # a unit dir override keeps the candidates
        (
            {"uid": 0, "private_socket": str(private), "unit_dir": Path("/u")},
            (Endpoint(mine.address, True, Path("/u")), Endpoint(BUS.address, False, Path("/u"))),
        ),
    ]
    try:
        for kwargs, expected in cases:
            assert candidate_endpoints(Scope.SYSTEM, environ={}, **kwargs) == expected, kwargs
    finally:
        sock.close()


def _parse(argv: list[str], env: dict[str, str] | None = None) -> config.Config:
    p = argparse.ArgumentParser()
    config.add_options(p)
    return config.load(p.parse_args(argv), env or {})


def test_bus_address_option() -> None:
    assert _parse([]).bus_address is None
    assert _parse(["--bus-address", "unix:path=/run/systemd/private"]).bus_address == (
        "unix:path=/run/systemd/private"
    )
    env = {"SWARMKEEPER_BUS_ADDRESS": "unix:path=/b"}
    assert _parse([], env).bus_address == "unix:path=/b"
    assert _parse(["--bus-address", "unix:path=/f"], env).bus_address == "unix:path=/f"
    for bad in ("/run/systemd/private", ":path=/x", ""):
        with pytest.raises(UsageError, match=r"--bus-address: .*not a D-Bus address"):
            _parse(["--bus-address", bad])


async def test_connect_falls_back_to_the_next_candidate(
    systemd_user: UserManager, tmp_path: Path
) -> None:
    """A dead first candidate costs one refused connect, not the run: the next one is used."""
    dead = tmp_path / "dead"
    _listening(dead).close()  # a socket file nobody listens on: connect() is refused
    endpoints = (
        Endpoint(f"unix:path={dead}", True, systemd_user.unit_dir),
        Endpoint(systemd_user.private_address, True, systemd_user.unit_dir),
    )
    from reconciler.actuators import systemd as actuator

    endpoint, bus = await actuator._open_first(endpoints)
    try:
        assert endpoint == endpoints[1]
        assert bus.connected
    finally:
        bus.disconnect()
    with pytest.raises(SystemdError, match=rf"{dead}.*; .*{tmp_path / 'gone'}"):
        await actuator._open_first(
            (endpoints[0], Endpoint(f"unix:path={tmp_path / 'gone'}", True, Path("/u")))
        )


async def test_explicit_address_is_the_only_candidate(systemd_user: UserManager) -> None:
    sd = await Systemd.connect(
        Scope.SYSTEM, address=systemd_user.private_address, unit_dir=systemd_user.unit_dir
    )
    try:
        assert sd.endpoint.address == systemd_user.private_address
        assert sd.endpoint.peer_to_peer
        assert (await sd.status(["default.target"]))["default.target"].active_state == "active"
    finally:
        await sd.close()
