"""The production shape: swarmkeeper as root INSIDE a node whose systemd is PID 1, driving the
system manager, unit files in /etc/systemd/system, files where the spec says.

Each test boots its own node (tests/fixtures/nspawn.py, ~0.4 s) and keeps its state repo in
the node's filesystem (/srv/state), so ``swarmkeeper apply --repo /srv/state/work`` runs there
as an operator would. The agent test runs the agent as a system unit of the node, talking to
etcd on the host's loopback (the node shares the host's network).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.fixtures.etcd import EtcdServer, etcdctl
from tests.fixtures.gitrepo import MINIMAL_STATE, StateRepo, make_state_repo
from tests.fixtures.nspawn import REPO_ROOT, Node

pytestmark = pytest.mark.slow

UNIT_DIR = "/etc/systemd/system"
SLEEP = "[Service]\nExecStart=/bin/sleep infinity\n[Install]\nWantedBy=multi-user.target\n"
ENV = "/etc/swarmkeeper/node.env"


def state(**extra: str | None) -> dict[str, str | bytes | None]:
    return {
        **MINIMAL_STATE,
        "state/roles/manager.yaml": "units:\n  - a.service\n  - b.service\n  - c.service\n"
        'files:\n  - {path: /etc/motd, content: "managed\\n"}\n',
        "units/a.service": SLEEP,
        "units/b.service": SLEEP,
        # reads the node environment file: a change of it restarts c only
        "units/c.service": f"[Service]\nEnvironmentFile={ENV}\nExecStart=/bin/sleep infinity\n"
        "[Install]\nWantedBy=multi-user.target\n",
        **extra,
    }


def repo_in(node: Node, files: dict[str, str | bytes | None]) -> StateRepo:
    return make_state_repo(node.path("/srv/state"), files)


def sk(node: Node, command: str, rev: str, *args: str) -> subprocess.CompletedProcess[str]:
    return node.swarmkeeper("--log-level", "warning", command, "--repo", "/srv/state/work",
                            "--rev", rev, "--node", "node1", "--role", "manager", *args)  # fmt: skip


def apply_json(node: Node, rev: str, *args: str, expect: int = 0) -> dict[str, Any]:
    out = sk(node, "apply", rev, "--json", *args)
    assert out.returncode == expect, (
        f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def ids(node: Node, *units: str) -> dict[str, str]:
    return {u: node.show(u, "InvocationID")["InvocationID"] for u in units}


def active(node: Node, unit: str) -> str:
    return node.show(unit, "ActiveState")["ActiveState"]


def plan_is_empty(node: Node, rev: str) -> bool:
    out = sk(node, "plan", rev)
    assert out.returncode in (0, 2), out.stderr
    return out.returncode == 0


def test_first_apply_on_the_system_manager(pid1_node: Node) -> None:
    rev = repo_in(pid1_node, state()).commit({}, "r1")
    assert not plan_is_empty(pid1_node, rev)
    doc = apply_json(pid1_node, rev)
    assert doc["outcome"] == "converged" and doc["revision"] == rev
    for u in ("a.service", "b.service", "c.service"):
        props = pid1_node.show(u, "ActiveState", "FragmentPath", "UnitFileState")
        assert props == {"ActiveState": "active", "FragmentPath": f"{UNIT_DIR}/{u}",
                         "UnitFileState": "enabled"}, u  # fmt: skip
        # enabled the system way: a symlink in multi-user.target.wants of the node
        assert pid1_node.path(f"{UNIT_DIR}/multi-user.target.wants/{u}").is_symlink()
    assert pid1_node.path("/etc/motd").read_text() == "managed\n"
    assert "SWARMKEEPER_NODE=node1" in pid1_node.path(ENV).read_text()
    assert pid1_node.path("/var/lib/swarmkeeper").is_dir()  # the system scope's state dir
    # converged: a second plan, and a fresh process's apply, do nothing
    assert plan_is_empty(pid1_node, rev)
    assert apply_json(pid1_node, rev)["actions"] == []


def test_a_one_unit_change_restarts_only_that_unit(pid1_node: Node) -> None:
    repo = repo_in(pid1_node, state())
    apply_json(pid1_node, repo.commit({}, "r1"))
    before = ids(pid1_node, "a.service", "b.service", "c.service")
    rev = repo.commit(
        {"units/b.service": SLEEP.replace("[Service]\n", "[Service]\nEnvironment=X=2\n")}
    )
    doc = apply_json(pid1_node, rev)
    assert [(a["action"], a["target"]) for a in doc["actions"] if a["action"] == "restart"] == [
        ("restart", "b.service")
    ]
    after = ids(pid1_node, "a.service", "b.service", "c.service")
    assert after["a.service"] == before["a.service"] and after["c.service"] == before["c.service"]
    assert after["b.service"] != before["b.service"] and after["b.service"]
    # a change of the environment file restarts only its reader, c
    rev = repo.commit({"state/cluster.yaml": "name: test\nmanagers: 1\nvars: {MODE: two}\n"})
    apply_json(pid1_node, rev)
    again = ids(pid1_node, "a.service", "b.service", "c.service")
    assert [again[u] == after[u] for u in ("a.service", "b.service", "c.service")] == [
        True,
        True,
        False,
    ]


def test_drift_repair_of_a_hand_stopped_and_a_hand_edited_unit(pid1_node: Node) -> None:
    rev = repo_in(pid1_node, state()).commit({}, "r1")
    apply_json(pid1_node, rev)
    pid1_node.systemctl("stop", "a.service", check=True)
    unit_b = pid1_node.path(f"{UNIT_DIR}/b.service")
    unit_b.write_text(SLEEP.replace("sleep infinity", "sleep 12345"))
    pid1_node.systemctl("daemon-reload", check=True)
    pid1_node.systemctl("restart", "b.service", check=True)
    before = ids(pid1_node, "b.service", "c.service")
    assert not plan_is_empty(pid1_node, rev)
    doc = apply_json(pid1_node, rev)
    assert doc["drift"] >= 2
    reasons = {(a["action"], a["target"]): a["reason"] for a in doc["actions"]}
    assert reasons[("start", "a.service")].startswith("drift")
    assert reasons[("write", "b.service")] == "drift: unit file edited by hand"
    assert unit_b.read_text() == SLEEP
    assert active(pid1_node, "a.service") == active(pid1_node, "b.service") == "active"
    after = ids(pid1_node, "b.service", "c.service")
    assert after["b.service"] != before["b.service"] and after["c.service"] == before["c.service"]
    cmd = pid1_node.show("b.service", "ExecStart")["ExecStart"]
    assert "sleep infinity" in cmd and "12345" not in cmd
    assert plan_is_empty(pid1_node, rev)


def test_rollback_leaves_a_pre_existing_running_unit_running(pid1_node: Node) -> None:
    """A unit that ran before swarmkeeper (written by someone else, enabled and active) is
    adopted by a revision that also brings a failing unit: the rollback gives it back running."""
    pre = "[Unit]\nDescription=there before us\n" + SLEEP
    pid1_node.path(f"{UNIT_DIR}/pre.service").write_text(pre)
    pid1_node.systemctl("daemon-reload", check=True)
    pid1_node.systemctl("enable", "--now", "pre.service", check=True)
    repo = repo_in(pid1_node, state())
    good = repo.commit({}, "good")
    apply_json(pid1_node, good)
    bad = repo.commit({
        "state/roles/manager.yaml": "units:\n  - a.service\n  - pre.service\n  - bad.service\n",
        "units/pre.service": pre,
        "units/bad.service": "[Service]\nExecStart=/bin/false\n",
    }, "adopt pre, add a failing unit")  # fmt: skip
    doc = apply_json(pid1_node, bad, expect=3)
    assert doc["outcome"] == "rolled_back" and doc["applied"] == good
    assert doc["failure"]["unit"] == "bad.service"
    assert active(pid1_node, "pre.service") == "active"
    assert pid1_node.show("pre.service", "UnitFileState")["UnitFileState"] == "enabled"
    assert pid1_node.path(f"{UNIT_DIR}/pre.service").read_text() == pre
    assert active(pid1_node, "a.service") == "active"


VENDOR = ("[Unit]\nDescription=a vendor daemon\n[Service]\nEnvironment=MODE=vendor\n"
          "ExecStart=/bin/sh -c 'exec sleep infinity'\n[Install]\nWantedBy=multi-user.target\n")  # fmt: skip
DROPIN = f"{UNIT_DIR}/vendor.service.d/10-swarmkeeper.conf"


def _mode(node: Node) -> str:
    pid = node.show("vendor.service", "MainPID")["MainPID"]
    env = node.run("cat", f"/proc/{pid}/environ", check=True).stdout.split("\0")
    return next((e.split("=", 1)[1] for e in env if e.startswith("MODE=")), "")


def _dropin_state(content: str | None) -> dict[str, str | bytes | None]:
    files = f"  - {{path: {DROPIN}, content: {json.dumps(content)}}}\n" if content else ""
    return state(
        **{
            "state/roles/manager.yaml": "units:\n  - a.service\n"
            + (f"files:\n{files}" if files else "")
        }
    )


def _vendor_running(node: Node) -> None:
    node.path("/usr/lib/systemd/system/vendor.service").write_text(VENDOR)
    node.systemctl("daemon-reload", check=True)
    node.systemctl("enable", "--now", "vendor.service", check=True)
    assert _mode(node) == "vendor"


def test_a_drop_in_for_a_vendor_unit_is_written_loaded_and_removed(pid1_node: Node) -> None:
    """A vendor unit (the root's /usr/lib/systemd/system, like docker.service on Flatcar) gets
    a managed drop-in in /etc without the unit being shipped: systemd loads it (no reload left
    pending); removing it from the state deletes it and leaves the unit running."""
    _vendor_running(pid1_node)
    repo = repo_in(pid1_node, _dropin_state("[Service]\nEnvironment=MODE=one\n"))
    rev = repo.commit({}, "drop-in")
    apply_json(pid1_node, rev)
    props = pid1_node.show("vendor.service", "DropInPaths", "NeedDaemonReload", "FragmentPath")
    assert props["DropInPaths"] == DROPIN and props["NeedDaemonReload"] == "no"
    # the vendor's definition still (bookworm's /lib is /usr/lib), configured, not shipped
    assert props["FragmentPath"].endswith("/lib/systemd/system/vendor.service")
    assert pid1_node.show("vendor.service", "Environment")["Environment"] == "MODE=one"
    assert plan_is_empty(pid1_node, rev)
    rev = repo.commit(_dropin_state(None), "remove it")
    apply_json(pid1_node, rev)
    assert not pid1_node.path(DROPIN).exists()
    assert active(pid1_node, "vendor.service") == "active"
    assert plan_is_empty(pid1_node, rev)


def _first_class_dropin(content: str | None) -> dict[str, str | bytes | None]:
    """A role that configures vendor.service with ``units/vendor.service.d/10-swarmkeeper.conf``
    listed like a unit (docs/state-format.md), or without it."""
    name = "vendor.service.d/10-swarmkeeper.conf"
    if content is None:
        return state(
            **{"state/roles/manager.yaml": "units:\n  - a.service\n", f"units/{name}": None}
        )
    return state(**{"state/roles/manager.yaml": f"units:\n  - a.service\n  - {name}\n",
                    f"units/{name}": content})  # fmt: skip


def test_a_changed_drop_in_restarts_its_running_vendor_unit(pid1_node: Node) -> None:
    """The vendor unit runs with its drop-in once applied; a changed drop-in restarts it; a
    removed one gives the vendor behaviour back, and systemd forgets it."""
    _vendor_running(pid1_node)
    repo = repo_in(pid1_node, _first_class_dropin("[Service]\nEnvironment=MODE=one\n"))
    first = ids(pid1_node, "vendor.service")
    apply_json(pid1_node, repo.commit({}, "drop-in"))
    props = pid1_node.show("vendor.service", "DropInPaths", "FragmentPath")
    assert props["DropInPaths"] == DROPIN
    assert props["FragmentPath"].endswith("/lib/systemd/system/vendor.service")  # not shipped
    assert _mode(pid1_node) == "one", "the vendor unit was not restarted with its drop-in"
    second = ids(pid1_node, "vendor.service")
    assert second != first
    rev = repo.commit(_first_class_dropin("[Service]\nEnvironment=MODE=two\n"), "change it")
    apply_json(pid1_node, rev)
    assert _mode(pid1_node) == "two" and ids(pid1_node, "vendor.service") != second
    rev = repo.commit(_first_class_dropin(None), "remove it")
    apply_json(pid1_node, rev)
    assert not pid1_node.path(DROPIN).exists()
    assert pid1_node.show("vendor.service", "DropInPaths", "NeedDaemonReload") == {
        "DropInPaths": "", "NeedDaemonReload": "no"}  # fmt: skip
    assert _mode(pid1_node) == "vendor"
    assert plan_is_empty(pid1_node, rev)


HUNG_BUS = """
import os, socket, time
path = "/run/dbus/system_bus_socket"
os.makedirs("/run/dbus", exist_ok=True)
if os.path.exists(path):
    os.unlink(path)
s = socket.socket(socket.AF_UNIX)
s.bind(path)
s.listen(16)
time.sleep(3600)  # accepts (the kernel does) and never answers, like a hung dbus-daemon
"""


def test_root_reaches_systemd_without_the_bus_and_bus_address_overrides(pid1_node: Node) -> None:
    """The node's system bus hangs (a socket that never answers): apply as root still works
    at once through systemd's private socket; --bus-address is honoured over it."""
    pid1_node.systemctl("stop", "dbus.socket", "dbus.service", check=True)
    pid1_node.run("systemd-run", "--unit=hung-bus.service", "python3", "-c", HUNG_BUS, check=True)
    deadline = time.monotonic() + 10
    while pid1_node.run("test", "-S", "/run/dbus/system_bus_socket").returncode != 0:
        assert time.monotonic() < deadline, "the hung bus socket never appeared"
        time.sleep(0.05)
    rev = repo_in(pid1_node, state()).commit({}, "r1")
    t0 = time.monotonic()
    doc = apply_json(pid1_node, rev)
    assert doc["outcome"] == "converged"
    assert time.monotonic() - t0 < 20  # through the bus it would wait 25 s per call
    assert active(pid1_node, "a.service") == "active"
    # an explicit address wins: here one that refuses, so the command fails, clearly
    out = sk(pid1_node, "plan", rev, "--bus-address", "unix:path=/run/nothing-here")
    assert out.returncode == 1
    assert "cannot connect to unix:path=/run/nothing-here" in out.stderr
    assert "Traceback" not in out.stderr
    # and the private socket named explicitly works like the default
    assert (
        sk(pid1_node, "plan", rev, "--bus-address", "unix:path=/run/systemd/private").returncode
        == 0
    )


# ---------------------------------------------------------------- the agent as a system unit


def agent_unit(etcd: str, gen: str) -> str:
    return f"""[Unit]
Description=swarmkeeper agent (test)
StartLimitIntervalSec=0

[Service]
Environment=GEN={gen}
Environment=HOME=/root
Environment=PYTHONPATH={REPO_ROOT}
ExecStart={sys.executable} -m reconciler --log-level info agent --node node1 --role manager \\
  --repo /srv/state/remote.git --etcd {etcd} --prefix /swarmkeeper --listen off \\
  --poll-interval 3600 --resync-interval 3600 --heartbeat-ttl 5
StandardOutput=append:/var/log/agent.log
StandardError=append:/var/log/agent.log
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
"""


def agent_state(
    etcd: str, gen: str, a_extra: str = "", dropin: str = ""
) -> dict[str, str | bytes | None]:
    """The agent's unit and ``a``; ``dropin``: a first-class drop-in entry for the agent's unit
    (``units/swarmkeeper-agent.service.d/10-test.conf``), whose ``on_change`` acts on it."""
    units = "units:\n  - a.service\n  - swarmkeeper-agent.service\n"
    extra: dict[str, str | bytes | None] = {}
    if dropin:
        units += "  - swarmkeeper-agent.service.d/10-test.conf\n"
        extra["units/swarmkeeper-agent.service.d/10-test.conf"] = dropin
    return state(**{
        "state/roles/manager.yaml": units,
        "units/a.service": SLEEP.replace("[Service]\n", f"[Service]\n{a_extra}"),
        "units/swarmkeeper-agent.service": agent_unit(etcd, gen),
        **extra,
    })  # fmt: skip


AGENT_DROPIN = f"{UNIT_DIR}/swarmkeeper-agent.service.d/10-test.conf"


def wait_for(what: str, check: Callable[[], bool], node: Node, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            log = node.path("/var/log/agent.log")
            raise AssertionError(f"{what} after {timeout}s\n"
                                 f"{log.read_text()[-4000:] if log.exists() else '(no agent log)'}")  # fmt: skip
        time.sleep(0.2)


def status(etcd: EtcdServer) -> dict[str, Any]:
    text = etcdctl(
        etcd.endpoint, "get", "--print-value-only", "/swarmkeeper/nodes/node1/status"
    ).strip()
    return json.loads(text) if text else {}


def converged_on(etcd: EtcdServer, rev: str) -> Callable[[], bool]:
    return lambda: (s := status(etcd)).get("state") == "converged" and s.get("revision") == rev


def agent_converged(node: Node, etcd_server: EtcdServer) -> tuple[StateRepo, str]:
    """The agent running as a system unit, converged on a first revision that manages its
    unit (installed at first boot, Ignition's job in production, then adopted by the repo)."""
    etcd, agent = etcd_server.endpoint, "swarmkeeper-agent.service"
    repo = repo_in(node, agent_state(etcd, "1"))
    r1 = repo.commit({}, "r1")
    node.path(f"{UNIT_DIR}/{agent}").write_text(agent_unit(etcd, "1"))
    node.systemctl("daemon-reload", check=True)
    node.systemctl("start", agent, check=True)
    etcdctl(etcd_server.endpoint, "put", "/swarmkeeper/desired/revision", r1)
    wait_for(f"converged on {r1[:12]}", converged_on(etcd_server, r1), node)
    return repo, r1


def publish_rolled_back(node: Node, etcd_server: EtcdServer, rev: str, back_to: str) -> str:
    """Publish ``rev``, wait for the node to be degraded on ``back_to``; its error."""
    etcdctl(etcd_server.endpoint, "put", "/swarmkeeper/desired/revision", rev)
    wait_for(
        "degraded after the rollback",
        lambda: (
            (s := status(etcd_server)).get("state") == "degraded" and s.get("revision") == back_to
        ),
        node,
    )
    return str(status(etcd_server)["error"])


def test_agent_updates_itself_without_a_reboot(pid1_node: Node, etcd_server: EtcdServer) -> None:
    """The agent runs as a system unit; a revision changes that unit (an Environment= line):
    after its pass the agent has systemd restart it (new pid, new InvocationID, the new
    environment); a revision published while it restarts is applied by the new agent; a
    drop-in for the agent's unit restarts it the same way."""
    node, etcd = pid1_node, etcd_server.endpoint
    agent = "swarmkeeper-agent.service"
    repo, _r1 = agent_converged(node, etcd_server)
    first = node.show(agent, "InvocationID", "MainPID")
    a_id = ids(node, "a.service")

    def replaced(before: dict[str, str]) -> Callable[[], bool]:
        def check() -> bool:
            now = node.show(agent, "InvocationID", "MainPID", "ActiveState")
            return (now["ActiveState"] == "active" and now["InvocationID"] != before["InvocationID"]
                    and now["MainPID"] not in ("0", before["MainPID"]))  # fmt: skip

        return check

    def environ(props: dict[str, str]) -> list[str]:
        return node.run("cat", f"/proc/{props['MainPID']}/environ", check=True).stdout.split("\0")

    t0 = time.monotonic()
    r2 = repo.commit(agent_state(etcd, "2"), "agent: GEN=2")
    etcdctl(etcd_server.endpoint, "put", "/swarmkeeper/desired/revision", r2)
    # the old agent writes this status, then queues its restart: publish the next revision
    # right away, so it arrives while the agent restarts
    wait_for(f"converged on {r2[:12]}", converged_on(etcd_server, r2), node)
    r3 = repo.commit(agent_state(etcd, "2", a_extra="Environment=Y=3\n"), "a: Y=3")
    etcdctl(etcd_server.endpoint, "put", "/swarmkeeper/desired/revision", r3)
    wait_for("the agent's unit restarted", replaced(first), node)
    wait_for(f"converged on {r3[:12]}", converged_on(etcd_server, r3), node)
    print(f"publish of the agent change -> new agent converged on the next revision: "
          f"{time.monotonic() - t0:.2f}s")  # fmt: skip
    second = node.show(agent, "InvocationID", "MainPID", "NRestarts")
    assert "GEN=2" in environ(second)  # the new definition runs
    assert second["NRestarts"] == "0"  # a restart job, not a crash and Restart=on-failure
    assert node.path(f"{UNIT_DIR}/{agent}").read_text() == agent_unit(etcd, "2")
    assert ids(node, "a.service") != a_id  # r3 reached a, by one of the two agents
    log = node.path("/var/log/agent.log").read_text()
    assert log.count('"agent.restart-self"') == 1, log[-3000:]

    # a drop-in for the agent's unit: written, loaded, and the agent restarted with it
    r4 = repo.commit(agent_state(etcd, "2", "Environment=Y=3\n", "[Service]\nEnvironment=GEN=4\n"))
    a_id = ids(node, "a.service")
    etcdctl(etcd_server.endpoint, "put", "/swarmkeeper/desired/revision", r4)
    wait_for("the agent's unit restarted again", replaced(second), node)
    wait_for(f"converged on {r4[:12]}", converged_on(etcd_server, r4), node)
    third = node.show(agent, "InvocationID", "MainPID", "DropInPaths")
    assert third["DropInPaths"] == AGENT_DROPIN
    assert "GEN=4" in environ(third)
    assert ids(node, "a.service") == a_id  # only the agent's unit was due a restart
    log = node.path("/var/log/agent.log").read_text()
    assert log.count('"agent.restart-self"') == 2, log[-3000:]
    assert node.show(agent, "InvocationID") == {"InvocationID": third["InvocationID"]}


def test_agent_does_not_restart_itself_for_a_revision_that_rolls_back(
    pid1_node: Node, etcd_server: EtcdServer
) -> None:
    """A revision that changes the agent's unit and brings a failing unit rolls back whole:
    the agent's unit file is restored and the agent that ran it keeps running."""
    node, etcd = pid1_node, etcd_server.endpoint
    agent = "swarmkeeper-agent.service"
    repo, r1 = agent_converged(node, etcd_server)
    first = node.show(agent, "InvocationID", "MainPID")
    bad = agent_state(etcd, "2")
    bad["state/roles/manager.yaml"] = (
        "units:\n  - a.service\n  - swarmkeeper-agent.service\n  - bad.service\n"
    )
    bad["units/bad.service"] = "[Service]\nExecStart=/bin/false\n"
    error = publish_rolled_back(node, etcd_server, repo.commit(bad, "GEN=2, a failing unit"), r1)
    assert "bad.service" in error
    assert node.show(agent, "InvocationID", "MainPID") == first
    assert node.path(f"{UNIT_DIR}/{agent}").read_text() == agent_unit(etcd, "1")
    assert node.show(agent, "NeedDaemonReload")["NeedDaemonReload"] == "no"
    assert '"agent.restart-self"' not in node.path("/var/log/agent.log").read_text()


def test_a_revision_that_removes_the_agents_own_unit_is_rejected_and_the_agent_lives(
    pid1_node: Node, etcd_server: EtcdServer
) -> None:
    """Stopping its own unit would kill the agent in the middle of that very pass: the node
    refuses the revision, says why, and stays on the last one with the agent running."""
    node, etcd = pid1_node, etcd_server.endpoint
    agent = "swarmkeeper-agent.service"
    repo, r1 = agent_converged(node, etcd_server)
    first = node.show(agent, "InvocationID", "MainPID")
    r2 = repo.commit({"state/roles/manager.yaml": "units:\n  - a.service\n"}, "drop the agent")
    etcdctl(etcd_server.endpoint, "put", "/swarmkeeper/desired/revision", r2)
    wait_for(
        "rejected on the last good revision",
        lambda: (s := status(etcd_server)).get("state") == "rejected" and s.get("revision") == r1,
        node,
    )
    assert f"removes {agent}, the unit this agent runs as" in status(etcd_server)["error"]
    assert node.show(agent, "InvocationID", "MainPID") == first
    assert node.path(f"{UNIT_DIR}/{agent}").read_text() == agent_unit(etcd, "1")


def test_a_failed_units_status_carries_its_invocations_lines_from_the_nodes_journald(
    pid1_node: Node, etcd_server: EtcdServer
) -> None:
    """On a node with journald (PID 1's own), ``status --json`` answers "why" without ssh:
    the lines the failed invocation wrote, and none of an earlier one of the same unit."""
    node, etcd = pid1_node, etcd_server.endpoint
    repo, r1 = agent_converged(node, etcd_server)
    node.run("systemd-run", "--unit", "bad.service", "--wait", "/bin/sh", "-c",
             "echo an-earlier-run-of-bad", check=False)  # fmt: skip
    bad = agent_state(etcd, "1")
    bad["state/roles/manager.yaml"] = (
        "units:\n  - a.service\n  - swarmkeeper-agent.service\n  - bad.service\n"
    )
    bad["units/bad.service"] = (
        "[Service]\nType=exec\nExecStart=/bin/sh -c 'echo cannot-read-/etc/bad.conf >&2; exit 3'\n"
    )
    error = publish_rolled_back(node, etcd_server, repo.commit(bad, "fails, saying why"), r1)
    first = error.splitlines()[0]  # "start job failed" or "failed", as the race went
    assert first.startswith("bad.service ") and ": rolled back (rollout of " in first, error
    assert "cannot-read-/etc/bad.conf" in error, error
    assert "an-earlier-run-of-bad" not in error and "(no journal lines" not in error, error


def test_agent_configured_only_by_a_drop_in_restarts_after_the_pass(
    pid1_node: Node, etcd_server: EtcdServer
) -> None:
    """The agent's unit comes from provisioning and the state repo only configures it with a
    drop-in entry (as for any vendor unit): that drop-in's restart waits for the pass too."""
    node, etcd = pid1_node, etcd_server.endpoint
    agent = "swarmkeeper-agent.service"
    name = f"{agent}.d/10-test.conf"
    files: dict[str, str | bytes | None] = {
        "state/roles/manager.yaml": f"units:\n  - a.service\n  - {name}\n",
        f"units/{name}": "[Service]\nEnvironment=GEN=5\n",
    }
    repo = repo_in(node, state(**files))
    rev = repo.commit({}, "configure the agent with a drop-in")
    node.path(f"{UNIT_DIR}/{agent}").write_text(agent_unit(etcd, "1"))
    node.systemctl("daemon-reload", check=True)
    node.systemctl("start", agent, check=True)
    first = node.show(agent, "InvocationID", "MainPID")
    etcdctl(etcd_server.endpoint, "put", "/swarmkeeper/desired/revision", rev)
    wait_for(f"converged on {rev[:12]}", converged_on(etcd_server, rev), node)

    def restarted() -> bool:
        now = node.show(agent, "InvocationID", "ActiveState")
        return now["ActiveState"] == "active" and now["InvocationID"] != first["InvocationID"]

    wait_for("the agent's unit restarted", restarted, node)
    now = node.show(agent, "MainPID", "DropInPaths", "NRestarts")
    assert now["DropInPaths"] == AGENT_DROPIN and now["NRestarts"] == "0"
    environ = node.run("cat", f"/proc/{now['MainPID']}/environ", check=True).stdout.split("\0")
    assert "GEN=5" in environ
    log = node.path("/var/log/agent.log").read_text()
    assert log.count('"agent.restart-self"') == 1, log[-3000:]
    # the new agent's first pass finds the node converged: nothing left half-applied
    wait_for("a pass of the new agent", lambda: bool(passes_after_restart(node)), node)
    first_pass = passes_after_restart(node)[0]
    assert first_pass["outcome"] == "converged" and first_pass["actions"] == 0, first_pass
    assert status(etcd_server)["state"] == "converged"


def passes_after_restart(node: Node) -> list[dict[str, Any]]:
    """The agent's pass log lines after its (first) self-restart."""
    after = node.path("/var/log/agent.log").read_text().partition('"agent.restart-self"')[2]
    lines = [json.loads(x) for x in after.splitlines()[1:] if x.startswith("{")]
    return [x for x in lines if x.get("event") == "pass"]
