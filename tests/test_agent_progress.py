"""What an agent says while it works, and what its states mean: one real agent process
against real etcd, git and a systemd user manager.

- nothing published and no branch head to follow: ``idle``, never ``converged``;
- nothing published but a branch head: the agent applies the head (the rollout gate lets the
  followed revision through);
- an apply logs its start, each unit job and the health gate, and publishes ``progress``;
- a failing unit's error carries systemd's result in words and says why no journal lines
  follow (there is no journald on the test machines).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from reconciler import keys
from reconciler.etcd import Etcd
from tests.fixtures.agents import AgentProc, agent_for, wait_for
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.gitrepo import StateRepo, make_state_repo
from tests.fixtures.systemd_user import user_manager

pytestmark = pytest.mark.slow
P = "/swarmkeeper"
SLOW = "[Service]\nExecStartPre=/bin/sleep 1\nExecStart=/bin/sleep infinity\n"
STATE: dict[str, str | bytes | None] = {
    "state/cluster.yaml": "name: t\nmanagers: 1\n",
    # b's settle keeps the health gate open long enough for a progress write to show it
    "state/roles/manager.yaml": "units: [a.service, {name: b.service, settle: 1.5}]\n",
    "state/roles/worker.yaml": "units: [a.service]\n",
    "state/nodes/n1.yaml": "role: manager\n",
    "units/a.service": SLOW,
    "units/b.service": SLOW,
}


async def _get(ep: str, key: str) -> dict[str, object] | None:
    async with await Etcd.connect([ep]) as e:
        kv = await e.get(key)
        return json.loads(kv.value) if kv else None


def _history(ep: str, key: str) -> list[dict[str, object]]:
    """Every value the key has had (etcd keeps them until compaction), oldest first."""

    def etcdctl(*args: str) -> str:
        return subprocess.run(["etcdctl", "--endpoints", ep, *args], capture_output=True,
                              text=True, check=True, timeout=20,
                              env={"ETCDCTL_API": "3", "PATH": os.environ["PATH"]}).stdout  # fmt: skip

    kv = json.loads(etcdctl("get", key, "-w", "json"))["kvs"][0]
    out: list[dict[str, object]] = []
    for rev in range(kv["create_revision"], kv["mod_revision"] + 1):
        raw = etcdctl("get", key, f"--rev={rev}", "--print-value-only").strip()
        if raw and (not out or out[-1] != json.loads(raw)):
            out.append(json.loads(raw))
    return out


@pytest.fixture
def node(etcd_server: EtcdServer, tmp_path: Path) -> Iterator[tuple[StateRepo, object]]:
    repo = make_state_repo(tmp_path / "repo", STATE)
    with ExitStack() as stack:
        short = Path(tempfile.mkdtemp(prefix="skp-"))
        stack.callback(shutil.rmtree, short, True)
        um = stack.enter_context(user_manager(short, f"skp{os.getpid()}"))

        def start(*extra: str) -> AgentProc:
            a = agent_for(um, tmp_path / "nodes", node="n1", repo=repo.url,
                          etcd=etcd_server.endpoint, extra=list(extra))  # fmt: skip
            stack.callback(a.stop)
            a.start()
            return a

        yield repo, start


def status(ep: str) -> dict[str, object]:
    return asyncio.run(_get(ep, keys.node_status(P, "n1"))) or {}


def test_idle_without_anything_to_follow(etcd_server: EtcdServer, node: tuple) -> None:
    _, start = node
    start("--branch", "no-such-branch")
    ep = etcd_server.endpoint
    wait_for(lambda: status(ep).get("state") == "idle", 30, "idle")
    st = status(ep)
    assert st["revision"] == "" and st["desired"] == ""


def test_follows_the_branch_head_when_nothing_is_published(
    etcd_server: EtcdServer, node: tuple
) -> None:
    repo, start = node
    head = repo.commit({}, "head")
    start("--poll-interval", "1")
    ep = etcd_server.endpoint
    wait_for(lambda: status(ep).get("revision") == head, 40, "the branch head applied")
    assert status(ep)["state"] == "converged"


def test_apply_logs_and_publishes_progress(etcd_server: EtcdServer, node: tuple) -> None:
    repo, start = node
    ep = etcd_server.endpoint
    rev = repo.commit({}, "first")
    agent = start()
    asyncio.run(_put(ep, keys.desired_revision(P), rev))
    wait_for(lambda: status(ep).get("state") == "converged", 60, "converged")
    seen = _history(ep, keys.node_status(P, "n1"))
    progress = [str(s["progress"]) for s in seen if s.get("progress")]
    assert any(p.endswith("start a.service") for p in progress), progress
    assert any(" verify " in f" {p} " for p in progress), progress
    n = {p.split(" ")[0].split("/")[1] for p in progress if p}
    assert len(n) == 1  # every step counts against the same plan length
    assert "progress" not in seen[-1]  # the final status carries none
    events = [json.loads(ln) for ln in agent.log().splitlines() if ln.startswith("{")]
    start_ev = next(e for e in events if e["event"] == "apply.start")
    assert start_ev["units"] == ["a.service", "b.service"] and start_ev["actions"] >= 4
    units = [(e["action"], e["unit"]) for e in events if e["event"] == "unit"]
    assert ("start", "a.service") in units and ("start", "b.service") in units
    assert any(e["event"] == "gate.wait" for e in events)
    # a failing unit: the error says systemd's result in words and why no journal follows
    bad = repo.commit({"units/b.service": "[Service]\nExecStart=/bin/false\n"}, "b fails")
    asyncio.run(_put(ep, keys.desired_revision(P), bad))
    wait_for(lambda: status(ep).get("state") == "degraded", 60, "degraded")
    err = str(status(ep)["error"])
    first, _, rest = err.partition("\n")
    assert first.startswith("b.service failed (exit-code: the main process exited with a "
                            "non-zero status): rolled back"), err  # fmt: skip
    assert "(no journal lines: " in rest


async def _put(ep: str, key: str, value: str) -> None:
    async with await Etcd.connect([ep]) as e:
        await e.put(key, value)


def _plan() -> tuple[object, ...]:
    from reconciler.plan import actions as Pl

    return (
        Pl.StopUnit("old.service", "gone"),
        Pl.WriteUnit("a.service", b"x", "new"),
        Pl.WriteFile("/etc/a", b"x", 0o644, "new"),
        Pl.DaemonReload("units changed"),
        Pl.RestartUnit("web.service", "changed"),
        Pl.EnableUnit("a.service", "new"),
        Pl.EnableUnit("web.service", "new"),
        Pl.Verify((Pl.Gate("a.service", 10), Pl.Gate("web.service", 10)), "gate"),
    )


@pytest.mark.parametrize(
    ("i", "text"),
    [(0, "stop old.service"), (1, "write 2 files"), (3, "daemon-reload"),
     (4, "restart web.service"), (5, "enable 2 units"), (7, "verify 2 unit(s)")],
)  # fmt: skip
def test_step_text(i: int, text: str) -> None:
    from reconciler.apply.execute import _batch_len, step_text

    plan = _plan()
    assert step_text(plan[i], _batch_len(plan, i)) == text  # type: ignore[arg-type]
