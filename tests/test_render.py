"""Rendering: node overrides, the environment file, determinism, and reading real trees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.desired import RepoTree, render
from reconciler.errors import InvalidDesiredState
from reconciler.models import NodeFacts, NodeName, OnChange, Role
from reconciler.source import read_tree
from tests.fixtures.gitrepo import StateRepo
from tests.test_validate import GOOD

REPO_ROOT = Path(__file__).resolve().parent.parent


def facts(name: str = "node-1", role: Role | None = None) -> NodeFacts:
    return NodeFacts(NodeName(name), role, "10.1.2.3", ("10.1.2.1:2379", "http://10.1.2.2:2379"))


def test_node_overrides_apply_in_role_order() -> None:
    spec = render(RepoTree(files=GOOD), facts())
    # b.service removed by the node file, c.service added at the end
    assert spec.unit_names == ("a.service", "c.service")
    assert spec.role is Role.MANAGER
    assert spec.labels == (("zone", "a"),)


def test_role_from_facts_when_no_node_file() -> None:
    spec = render(RepoTree(files=GOOD), facts("other", Role.WORKER))
    assert spec.unit_names == ("a.service",)
    assert [f.path for f in spec.files] == ["/etc/swarmkeeper/node.env"]


def test_missing_role_is_an_error() -> None:
    with pytest.raises(InvalidDesiredState) as e:
        render(RepoTree(files=GOOD), facts("other"))
    # there is no state/nodes/other.yaml: the error names the directory, not a missing file
    assert str(e.value.problems[0]) == (
        "state/nodes/: no other.yaml (node files: node-1): create state/nodes/other.yaml "
        "with 'role:', or pass --role"
    )


def test_unit_options_and_files() -> None:
    spec = render(RepoTree(files=GOOD), facts("m2", Role.MANAGER))
    b = spec.unit("b.service")
    assert b is not None and b.on_change is OnChange.RELOAD and b.enable is True
    assert b.settle == 0.5  # settle: 500ms
    a = spec.unit("a.service")
    assert a is not None and a.settle is None  # not set: the engine's default window
    files = {f.path: f for f in spec.files}
    assert files["/etc/x.env"].content == b"X=1\n" and files["/etc/x.env"].mode == 0o644
    assert files["/etc/motd"].content == b"hi\n"
    assert files["/etc/swarmkeeper/node.env"].content.decode().splitlines()[1:] == [
        "SWARMKEEPER_NODE=m2",
        "SWARMKEEPER_ROLE=manager",
        "SWARMKEEPER_CLUSTER=demo",
        "SWARMKEEPER_PREFIX=/swarmkeeper",
        "SWARMKEEPER_MANAGERS=3",
        "PRIVATE_IPV4=10.1.2.3",
        "ETCD_ENDPOINTS=http://10.1.2.1:2379,http://10.1.2.2:2379",
        "A=b",
    ]


def test_template_instance_uses_template_file() -> None:
    files = {**GOOD, "units/w@.service": b"[Service]\nExecStart=/bin/echo %i\n"}
    files["state/roles/worker.yaml"] = b"units: [a.service, w@one.service]\n"
    spec = render(RepoTree(files=files), facts("w1", Role.WORKER))
    unit = spec.unit("w@one.service")
    assert unit is not None and unit.content == files["units/w@.service"]


def test_git_commit_and_directory_render_identically(state_repo: StateRepo) -> None:
    rev = state_repo.commit({"units/b.service": "[Service]\nExecStart=/bin/true\n"}, "add b")
    from_git = render(read_tree(state_repo.work, rev), facts("n", Role.WORKER))
    from_dir = render(read_tree(state_repo.work), facts("n", Role.WORKER))
    assert from_git.revision == rev
    assert from_git.units == from_dir.units and from_git.files == from_dir.files
    # the bare remote holds the same commit, readable without any working tree
    assert render(read_tree(state_repo.remote, rev), facts("n", Role.WORKER)) == from_git


def test_symlink_inside_commit_is_followed_and_escape_rejected(state_repo: StateRepo) -> None:
    state_repo.symlink("units/b.service", "a.service")
    state_repo.symlink("units/evil.service", "../../../etc/passwd")
    rev = state_repo.commit(
        {"state/roles/worker.yaml": "units: [a.service, b.service, evil.service]\n"}, "links"
    )
    with pytest.raises(InvalidDesiredState) as e:
        render(read_tree(state_repo.work, rev), facts("n", Role.WORKER))
    assert [str(p) for p in e.value.problems] == [
        "state/roles/worker.yaml:1: unit evil.service: units/evil.service is a symlink that leaves the repository"
    ]


def test_render_is_byte_identical_across_processes() -> None:
    """Same commit and node, two fresh interpreters (different hash seeds): same bytes."""
    cmd = [sys.executable, "-m", "reconciler", "render", "--repo", str(REPO_ROOT),
           "--node", "manager-1", "--json"]  # fmt: skip
    outs = {
        subprocess.run(
            cmd,
            capture_output=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert len(outs) == 1 and b'"etcd-member.service"' in outs.pop()


def test_repo_state_is_valid() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "--repo", str(REPO_ROOT)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok: ")


def test_cli_lists_problems_with_exit_1(tmp_path: Path) -> None:
    (tmp_path / "state/roles").mkdir(parents=True)
    (tmp_path / "state/cluster.yaml").write_text("name: x\nmanagers: 4\nmanagers: 3\n")
    out = subprocess.run(
        [sys.executable, "-m", "reconciler", "validate", "--repo", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.splitlines() == [
        "state/cluster.yaml:3: duplicate key 'managers' (first at line 2): remove one",
        "state/roles/: manager.yaml is missing: the manager role must be defined (create state/roles/manager.yaml; an empty file is fine)",
        "state/roles/: worker.yaml is missing: the worker role must be defined (create state/roles/worker.yaml; an empty file is fine)",
        "3 problem(s) found",
    ]
    assert "Traceback" not in out.stderr
