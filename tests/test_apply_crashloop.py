"""A unit that crash-loops under ``Restart=`` must fail the health gate, on a real manager.

Between crashes such a unit is ``active`` for a moment or ``activating`` (``auto-restart``):
neither may pass for up. Each test reads systemd's own state after the apply.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.actuators.systemd import Scope, Systemd
from reconciler.agent.passes import _units
from reconciler.agent.policy import unit_word, with_units
from reconciler.apply.engine import Engine, Outcome
from reconciler.models import UnitSpec
from reconciler.status import NodeState
from tests.fixtures.systemd_user import UserManager
from tests.specs import spec, unit

LOOP = "Restart=always\nRestartSec=0.05\n"
NO_LIMIT = "[Unit]\nStartLimitIntervalSec=0\n"


@pytest.fixture
async def engine(systemd_user: UserManager, tmp_path: Path) -> AsyncIterator[Engine]:
    sd = await Systemd.connect(
        Scope.USER, address=systemd_user.private_address, unit_dir=systemd_user.unit_dir
    )
    try:
        yield Engine(sd, tmp_path / "state", root=tmp_path / "root")
    finally:
        await sd.close()


def looping(name: str, lifetime: float, settle: float | None) -> UnitSpec:
    """``ExecStart=`` dies ``lifetime`` s after start, forever; no start limit stops it."""
    u = unit(name, LOOP, exec_start=f"/bin/sh -c 'sleep {lifetime}; exit 1'", settle=settle)
    text = u.content.replace(b"[Service]\n", NO_LIMIT.encode() + b"[Service]\n", 1)
    return replace(u, content=text, timeout=5.0)


@pytest.mark.parametrize(
    ("lifetime", "settle"),
    [(0.05, None), (0.3, 0.6)],
    ids=["dies-at-once", "dies-after-0.3s"],
)
async def test_a_crash_looping_unit_fails_the_gate_and_rolls_back(
    engine: Engine, systemd_user: UserManager, lifetime: float, settle: float | None
) -> None:
    good = unit("vault.service")
    assert (await engine.apply(spec([good]))).outcome is Outcome.CONVERGED
    bad = looping("vault.service", lifetime, settle)
    result = await engine.apply(spec([bad], rev="r2"))
    assert result.outcome is Outcome.ROLLED_BACK, result.error
    assert result.applied == "r1"
    assert result.failure is not None and result.failure.unit == "vault.service"
    assert "restarting" in result.failure.state, result.failure.state
    assert (systemd_user.unit_dir / "vault.service").read_bytes() == good.content
    show = systemd_user.systemctl("show", "-P", "ActiveState", "vault.service").stdout.strip()
    assert show == "active"
    inv = engine.inventory()
    assert inv.revision == "r1" and inv.failed_revision == "r2"


@pytest.mark.parametrize(
    ("active", "sub", "n", "word"),
    [
        ("active", "running", 0, "active"),
        ("active", "running", 3, "restarting (3 restarts since its start)"),
        ("activating", "auto-restart", 2, "restarting (2 restarts since its start)"),
        ("inactive", "dead", 0, "inactive"),
        ("failed", "failed", 0, "failed"),
    ],
)
def test_unit_word_names_a_crash_loop(active: str, sub: str, n: int, word: str) -> None:
    assert unit_word(active, sub, n) == word


@pytest.mark.parametrize(
    ("state", "units", "want"),
    [
        (NodeState.CONVERGED, {"a.service": "active"}, (NodeState.CONVERGED, "")),
        (
            NodeState.CONVERGED,
            {"b.service": "restarting (4 restarts since its start)", "a.service": "active"},
            (NodeState.DEGRADED, "crash-looping: b.service restarting (4 restarts since its start)"),
        ),
        (NodeState.PAUSED, {"b.service": "restarting (1 restarts since its start)"},
         (NodeState.PAUSED, "")),
    ],
)  # fmt: skip
def test_a_crash_looping_unit_degrades_a_converged_node(
    state: NodeState, units: dict[str, str], want: tuple[NodeState, str]
) -> None:
    assert with_units(state, "", units) == want


async def test_a_unit_that_dies_after_the_window_is_reported_restarting(
    engine: Engine, systemd_user: UserManager
) -> None:
    """The default 0.1 s window passes a unit that dies after 0.3 s; the status must not."""
    bad = looping("vault.service", 0.3, None)
    assert (await engine.apply(spec([bad]))).outcome is Outcome.CONVERGED
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if int(systemd_user.systemctl("show", "-P", "NRestarts", "vault.service").stdout) > 0:
            break
        await asyncio.sleep(0.05)
    units = await _units(engine, spec([bad]))
    assert units["vault.service"].startswith("restarting ("), units
    state, error = with_units(NodeState.CONVERGED, "", units)
    assert state is NodeState.DEGRADED and "vault.service restarting" in error
    # an explicit start (what an apply or a repair does) resets the count the status reads
    systemd_user.systemctl("restart", "vault.service")
    assert systemd_user.systemctl("show", "-P", "NRestarts", "vault.service").stdout.strip() == "0"
