"""``swarmkeeper plan`` / ``apply`` as an operator runs them: subprocesses, real git, real systemd.

Exit codes are the contract (plan: 0 nothing to do, 2 changes pending, 1 error; apply: 0
converged, 1 invalid desired state, 3 rolled back); every test also reads systemd's state.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.clihelp import check_schema
from tests.fixtures.gitrepo import MINIMAL_STATE, StateRepo, make_state_repo
from tests.fixtures.systemd_user import UserManager

REPO_ROOT = Path(__file__).resolve().parent.parent
SLEEP = "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=default.target\n"


def swarmkeeper(
    um: UserManager, tmp: Path, command: str, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reconciler", "--log-level", "warning", command,
         "--node", "n1", "--role", "manager", "--scope", "user",
         "--state-dir", str(tmp / "state"), "--root", str(tmp / "root"), *args],
        env={**um.env, "PYTHONPATH": str(REPO_ROOT)}, cwd=REPO_ROOT,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def active(um: UserManager, unit: str) -> str:
    return um.systemctl("show", "-P", "ActiveState", unit).stdout.strip()


def state(**extra: str | None) -> dict[str, str | bytes | None]:
    return {
        **MINIMAL_STATE,
        "state/roles/manager.yaml": "units:\n  - a.service\n  - b.service\n",
        "units/a.service": SLEEP,
        "units/b.service": SLEEP,
        **extra,
    }


def test_apply_converges_then_plan_and_apply_are_no_ops(
    systemd_user: UserManager, tmp_path: Path
) -> None:
    repo = make_state_repo(tmp_path / "repo", state())
    rev = repo.commit({}, "noop")
    first = swarmkeeper(systemd_user, tmp_path, "plan", "--repo", str(repo.work), "--rev", rev)
    assert first.returncode == 2, first.stderr
    assert (
        "start a.service: new unit" in first.stdout and "start b.service: new unit" in first.stdout
    )
    applied = swarmkeeper(
        systemd_user, tmp_path, "apply", "--repo", str(repo.work), "--rev", rev, "--json"
    )
    assert applied.returncode == 0, applied.stderr
    doc = check_schema(applied.stdout, "ApplyResult")
    assert doc["outcome"] == "converged" and doc["revision"] == rev
    assert {a["action"] for a in doc["actions"]} >= {
        "write",
        "daemon-reload",
        "start",
        "enable",
        "verify",
    }
    assert active(systemd_user, "a.service") == active(systemd_user, "b.service") == "active"
    env = (tmp_path / "root/etc/swarmkeeper/node.env").read_text()
    assert "SWARMKEEPER_NODE=n1" in env
    again = swarmkeeper(
        systemd_user, tmp_path, "plan", "--repo", str(repo.work), "--rev", rev, "--json"
    )
    assert again.returncode == 0, again.stderr
    assert check_schema(again.stdout, "Plan")["actions"] == []
    noop = swarmkeeper(
        systemd_user, tmp_path, "apply", "--repo", str(repo.work), "--rev", rev, "--json"
    )
    assert noop.returncode == 0 and json.loads(noop.stdout)["actions"] == []


def test_failing_unit_exits_3_and_the_node_stays_on_the_previous_revision(
    systemd_user: UserManager, tmp_path: Path
) -> None:
    repo: StateRepo = make_state_repo(tmp_path / "repo", state())
    good = repo.commit({}, "good")
    assert (
        swarmkeeper(systemd_user, tmp_path, "apply", "--repo", repo.url, "--rev", good).returncode
        == 0
    )
    inv_before = systemd_user.systemctl("show", "-P", "InvocationID", "a.service").stdout
    bad = repo.commit({"units/b.service": "[Service]\nExecStart=/bin/false\n"}, "break b")
    pending = swarmkeeper(systemd_user, tmp_path, "plan", "--repo", repo.url, "--rev", bad)
    assert pending.returncode == 2 and "restart b.service: unit changed" in pending.stdout
    out = swarmkeeper(systemd_user, tmp_path, "apply", "--repo", repo.url, "--rev", bad, "--json")
    assert out.returncode == 3, out.stderr
    doc = json.loads(out.stdout)
    assert doc["outcome"] == "rolled_back" and doc["applied"] == good
    assert doc["failure"]["unit"] == "b.service" and "failed" in doc["failure"]["state"]
    assert (systemd_user.unit_dir / "b.service").read_text() == SLEEP
    assert active(systemd_user, "a.service") == active(systemd_user, "b.service") == "active"
    assert systemd_user.systemctl("show", "-P", "InvocationID", "a.service").stdout == inv_before
    text = swarmkeeper(systemd_user, tmp_path, "apply", "--repo", repo.url, "--rev", bad)
    assert text.returncode == 3 and "b.service" in text.stderr and "rolled_back" in text.stderr


def test_invalid_desired_state_exits_1_and_touches_nothing(
    systemd_user: UserManager, tmp_path: Path
) -> None:
    repo = make_state_repo(tmp_path / "repo", state())
    assert swarmkeeper(systemd_user, tmp_path, "apply", "--repo", str(repo.work)).returncode == 0
    inv_before = systemd_user.systemctl("show", "-P", "InvocationID", "b.service").stdout
    (repo.work / "state/roles/manager.yaml").write_text("units:\n  - a.service\n  - [b.service\n")
    out = swarmkeeper(systemd_user, tmp_path, "apply", "--repo", str(repo.work))
    assert out.returncode == 1
    assert "state/roles/manager.yaml:" in out.stderr
    assert systemd_user.systemctl("show", "-P", "InvocationID", "b.service").stdout == inv_before
    assert swarmkeeper(systemd_user, tmp_path, "plan", "--repo", str(repo.work)).returncode == 1


@pytest.mark.parametrize("command", ["plan", "apply"])
def test_by_hand_a_file_outside_the_node_policy_is_refused_as_the_agent_refuses_it(
    systemd_user: UserManager, tmp_path: Path, command: str
) -> None:
    role = 'units:\n  - a.service\nfiles:\n  - {path: /etc/shadow, content: "x", mode: "0600"}\n'
    repo = make_state_repo(tmp_path / "repo", state(**{"state/roles/manager.yaml": role}))
    out = swarmkeeper(systemd_user, tmp_path, command, "--repo", str(repo.work))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "state/roles/manager.yaml:4: file /etc/shadow is outside" in out.stderr, out.stderr
    assert not (tmp_path / "root/etc/shadow").exists()
    assert active(systemd_user, "a.service") == "inactive"


def test_git_url_and_branch_head(systemd_user: UserManager, tmp_path: Path) -> None:
    repo = make_state_repo(tmp_path / "repo", state())
    out = swarmkeeper(
        systemd_user,
        tmp_path,
        "apply",
        "--repo",
        f"file://{repo.remote}",
        "--branch",
        "main",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    head = repo.commit({"units/a.service": SLEEP.replace("infinity", "100000")}, "change a")
    plan = swarmkeeper(systemd_user, tmp_path, "plan", "--repo", f"file://{repo.remote}", "--json")
    assert plan.returncode == 2
    doc = json.loads(plan.stdout)
    assert doc["revision"] == head
    assert [(a["action"], a["target"]) for a in doc["actions"] if a["action"] == "restart"] == [
        ("restart", "a.service")
    ]


def test_options_from_a_config_file_and_the_environment(
    systemd_user: UserManager, tmp_path: Path
) -> None:
    repo = make_state_repo(tmp_path / "repo", state())
    cfg = tmp_path / "swarmkeeper.yaml"
    cfg.write_text(
        f"repo: {repo.work}\nnode: n1\nrole: worker\nscope: system\nstate_dir: {tmp_path / 'state'}\nroot: {tmp_path / 'root'}\n"
    )
    env = {
        **systemd_user.env,
        "PYTHONPATH": str(REPO_ROOT),
        "SWARMKEEPER_CONFIG": str(cfg),
        "SWARMKEEPER_SCOPE": "user",
    }
    run = [sys.executable, "-m", "reconciler", "--log-level", "warning"]
    out = subprocess.run(
        [*run, "apply", "--role", "manager", "--json"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr  # scope from the env beat the file's "system"
    assert json.loads(out.stdout)["outcome"] == "converged"
    assert (
        active(systemd_user, "b.service") == "active"
    )  # role from the flag beat the file's worker
    plan = subprocess.run(
        [*run, "plan", "--role", "manager"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert plan.returncode == 0, plan.stdout + plan.stderr
    bad = subprocess.run(
        [*run, "plan", "--role", "boss"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 1 and "--role: 'boss' is not one of manager, worker" in bad.stderr


def test_a_second_apply_on_the_node_is_refused_while_one_runs(
    systemd_user: UserManager, tmp_path: Path
) -> None:
    """Two processes applying on one node (the agent and an operator) would interleave
    their plans: the second is told who holds the node and touches nothing."""
    import os

    from reconciler.actuators.inventory import InventoryStore

    repo = make_state_repo(tmp_path / "repo", state())
    rev = repo.commit({}, "first")
    with InventoryStore(tmp_path / "state").exclusive():  # stands for an apply in flight
        busy = swarmkeeper(systemd_user, tmp_path, "apply", "--repo", str(repo.work), "--rev", rev)
        assert busy.returncode == 4  # busy, not wrong: retrying later helps
        assert (
            f"another swarmkeeper apply is running on this node (pid {os.getpid()}" in busy.stderr
        )
        assert not (systemd_user.unit_dir / "a.service").exists()
        assert not (tmp_path / "state" / "inventory.json").exists()
        assert active(systemd_user, "a.service") == "inactive"
    done = swarmkeeper(systemd_user, tmp_path, "apply", "--repo", str(repo.work), "--rev", rev)
    assert done.returncode == 0, done.stderr
    assert active(systemd_user, "a.service") == "active"
