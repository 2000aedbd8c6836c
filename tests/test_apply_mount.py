"""A mount unit through the engine on a real user manager (its own mount namespace).

The corpus leaves mount units out (their names are paths of the host); this one mounts a
tmpfs under the test's directory, inside the manager's private mount namespace.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reconciler.actuators.systemd import Scope, Systemd
from reconciler.apply.engine import Engine
from reconciler.models import UnitName, UnitSpec
from reconciler.plan import planner as P
from reconciler.plan.result import Outcome
from tests.fixtures.systemd_user import UserManager
from tests.specs import spec


@pytest.fixture
async def sd(systemd_user: UserManager) -> AsyncIterator[Systemd]:
    async with await Systemd.connect(
        Scope.USER, address=systemd_user.private_address, unit_dir=systemd_user.unit_dir
    ) as s:
        yield s


def mount(where: Path, size: str) -> UnitSpec:
    name = subprocess.run(
        ["systemd-escape", "--path", "--suffix=mount", str(where)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    text = f"[Mount]\nWhat=tmpfs\nWhere={where}\nType=tmpfs\nOptions=size={size}\n"
    return UnitSpec(UnitName(name), text.encode())


async def test_a_mount_is_up_when_mounted_drifts_when_unmounted_and_remounts_on_change(
    systemd_user: UserManager, sd: Systemd, tmp_path: Path
) -> None:
    um = systemd_user
    where = um.home / "mnt"
    where.mkdir()
    m = mount(where, "1m")
    engine = Engine(sd, tmp_path / "state")
    assert (await engine.apply(spec([m]))).outcome is Outcome.CONVERGED

    def show(prop: str) -> str:
        return um.systemctl("show", "-P", prop, m.name).stdout.strip()

    assert (show("ActiveState"), show("SubState")) == ("active", "mounted")
    assert await engine.plan(spec([m])) == ()
    um.systemctl("stop", m.name, check=True)  # unmounted by hand
    drift = await engine.plan(spec([m]))
    assert P.describe(drift[0]) == f"start {m.name}: drift: stopped by hand"
    assert (await engine.apply(spec([m]))).outcome is Outcome.CONVERGED
    assert show("SubState") == "mounted"
    before = show("InvocationID")
    bigger = mount(where, "2m")
    assert (await engine.apply(spec([bigger], rev="r2"))).outcome is Outcome.CONVERGED
    assert show("SubState") == "mounted" and show("InvocationID") != before
    assert "size=2048k" in show("Options")
