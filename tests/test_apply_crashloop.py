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
from reconciler.agent import policy
from reconciler.agent.passes import _units
from reconciler.agent.policy import NO_REQUEUE, Requeue, recheck_in, unit_word, with_units
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
    ("active", "sub", "n", "up_for", "word", "recheck"),
    [
        ("active", "running", 0, 1.0, "active", None),
        ("active", "running", 3, 10.0, "restarting (3 restarts since its start, up 10 s)", 20.0),
        ("active", "running", 3, None, "restarting (3 restarts since its start, up 0 s)", 30.0),
        ("active", "running", 3, 30.0, "active", None),  # recovered: up for the whole window
        ("active", "running", 3, 3600.0, "active", None),
        ("activating", "auto-restart", 2, None, "restarting (2 restarts since its start)", 30.0),
        ("inactive", "dead", 0, None, "inactive", None),
        ("failed", "failed", 4, None, "failed", None),
    ],
)  # fmt: skip
def test_unit_word_names_a_crash_loop_until_the_unit_stays_up(
    active: str, sub: str, n: int, up_for: float | None, word: str, recheck: float | None
) -> None:
    j = unit_word(active, sub, n, up_for)
    assert (j.word, j.recheck_in) == (word, recheck)


def test_a_pass_comes_again_when_the_first_restarting_unit_may_have_recovered() -> None:
    judged = [unit_word("active", "running", 1, 25.0), unit_word("active", "running", 0, 1.0),
              unit_word("activating", "auto-restart", 1)]  # fmt: skip
    assert recheck_in(judged) == Requeue.after(5.5)
    assert recheck_in([unit_word("active", "running", 0, 1.0)]) == NO_REQUEUE


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
    units = {name: j.word for name, j in (await _units(engine, spec([bad]))).items()}
    assert units["vault.service"].startswith("restarting ("), units
    state, error = with_units(NodeState.CONVERGED, "", units)
    assert state is NodeState.DEGRADED and "vault.service restarting" in error
    # an explicit start (what an apply or a repair does) resets the count the status reads
    systemd_user.systemctl("restart", "vault.service")
    assert systemd_user.systemctl("show", "-P", "NRestarts", "vault.service").stdout.strip() == "0"


async def test_a_unit_that_failed_at_boot_and_stayed_up_since_is_not_crash_looping(
    engine: Engine, systemd_user: UserManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Restarted by systemd until what it needed appeared (an image at boot), then up: the
    status says ``restarting`` only until it has been up ``RECOVERED_AFTER`` (1 s here)."""
    monkeypatch.setattr(policy, "RECOVERED_AFTER", 1.0)
    flag = tmp_path / "ready"
    u = unit("vault.service", LOOP,
             exec_start=f"/bin/sh -c 'test -e {flag} || exit 1; exec sleep 600'")  # fmt: skip
    u = replace(u, content=u.content.replace(b"[Service]\n", NO_LIMIT.encode() + b"[Service]\n", 1))
    (systemd_user.unit_dir / "vault.service").write_bytes(u.content)
    systemd_user.systemctl("daemon-reload")
    systemd_user.systemctl("start", "--no-block", "vault.service")  # as at boot...
    deadline = time.monotonic() + 5
    while int(systemd_user.systemctl("show", "-P", "NRestarts", "vault.service").stdout) < 2:
        assert time.monotonic() < deadline, "systemd never restarted it"
        await asyncio.sleep(0.02)
    flag.touch()  # ...then what it needed arrives and it stays up
    while (
        systemd_user.systemctl("show", "-P", "SubState", "vault.service").stdout.strip()
        != "running"
    ):
        assert time.monotonic() < deadline, "it never came up"
        await asyncio.sleep(0.02)
    first = (await _units(engine, spec([u])))["vault.service"]
    assert first.word.startswith("restarting ("), first
    assert first.recheck_in is not None and 0 < first.recheck_in <= 1.0
    await asyncio.sleep(first.recheck_in + 0.1)
    later = (await _units(engine, spec([u])))["vault.service"]
    assert later == policy.UnitJudgement("active"), later
    assert int(systemd_user.systemctl("show", "-P", "NRestarts", "vault.service").stdout) >= 2
