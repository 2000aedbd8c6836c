"""``sandbox up``, ``down`` and ``reboot``: the steps in order, each timed, each undoable.

``up`` writes ``DIR/sandbox.json`` (what it started: pids, namespaces, cgroups) before every
step that leaves something behind, so ``down`` cleans up after a failed or interrupted
``up`` too. It returns once every node reports ``converged`` on the first published
revision and writes ``DIR/cluster.json`` for operators (docs/sandbox.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from cloudconfig.generate import generate
from cloudconfig.params import load_params
from reconciler.errors import UsageError
from reconciler.sandbox import forward, host, images, node, preflight, spec, watch
from reconciler.sandbox.spec import Layout, NodeSpec

REPO_ROOT = images.REPO_ROOT
GIT = ["git", "-c", "user.name=swarmkeeper sandbox", "-c", "user.email=sandbox@localhost"]


class Timer:
    def __init__(self, say: Callable[[str], None]) -> None:
        self.start = time.monotonic()
        self.last = self.start
        self.phases: list[tuple[str, float]] = []
        self.say = say

    def done(self, phase: str) -> None:
        now = time.monotonic()
        self.phases.append((phase, now - self.last))
        self.say(f"{phase}: {now - self.last:.1f} s (total {now - self.start:.1f} s)")
        self.last = now

    def report(self) -> str:
        rows = [f"  {p:<16} {s:6.1f} s" for p, s in self.phases]
        return "\n".join([*rows, f"  {'start → converged':<16} {self.last - self.start:6.1f} s"])


def _say(msg: str) -> None:
    print(f"sandbox: {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the record of what runs


def load_record(lay_dir: Path) -> dict[str, Any]:
    try:
        rec: dict[str, Any] = json.loads((lay_dir / "sandbox.json").read_text())
    except (OSError, ValueError) as e:
        raise host.SandboxError(f"{lay_dir}: no sandbox here ({e})") from e
    return rec


def save_record(lay: Layout, rec: dict[str, Any]) -> None:
    tmp = lay.record.with_suffix(".tmp")
    tmp.write_text(json.dumps(rec, indent=2) + "\n")
    tmp.replace(lay.record)


def layout_of(rec: dict[str, Any]) -> Layout:
    return spec.layout(Path(rec["dir"]), rec["managers"], rec["workers"])


# ---------------------------------------------------------------- steps of up


def write_userdata(lay: Layout) -> dict[str, Path]:
    text = spec.params_yaml(lay)
    (lay.dir / "params.yml").write_text(text)
    out = generate(load_params(str(lay.dir / "params.yml"), text.encode()), ["ignition"])
    paths = {}
    for role in spec.Role:
        p = lay.dir / "userdata" / f"{role}.ign"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(out[f"{role}.ign"])
        paths[str(role)] = p
    return paths


def make_state_repo(lay: Layout, source: Path) -> str:
    """The bare repo the nodes follow, first commit = ``source``'s state with local images."""
    host.run(["git", "init", "-q", "--bare", "-b", "main", str(lay.repo)])
    (lay.repo / "git-daemon-export-ok").touch()
    host.run(["git", "init", "-q", "-b", "main", str(lay.work)])
    for sub in ("state", "units", "files"):
        if (source / sub).is_dir():
            shutil.copytree(source / sub, lay.work / sub)
    # the swarm leader drains and removes nodes the state does not list: list every node
    shutil.rmtree(lay.work / "state/nodes", ignore_errors=True)
    (lay.work / "state/nodes").mkdir()
    for n in lay.nodes:
        (lay.work / f"state/nodes/{n.name}.yaml").write_text(spec.node_yaml(n))
    (lay.work / "state/cluster.yaml").write_text(spec.cluster_yaml(len(lay.managers)))
    return commit(lay, "sandbox: the repository's state with the sandbox's images")


def commit(lay: Layout, message: str) -> str:
    w = ["-C", str(lay.work)]
    host.run([*GIT, *w, "add", "-A"])
    host.run([*GIT, *w, "commit", "-q", "--allow-empty", "-m", message])
    host.run([*GIT, *w, "push", "-q", str(lay.repo), "HEAD:main"])
    return host.run(["git", *w, "rev-parse", "HEAD"]).stdout.decode().strip()


def start_network(lay: Layout, rec: dict[str, Any]) -> None:
    host.add_netns(lay.bridge_netns)
    host.add_bridge(lay.bridge_netns, spec.BRIDGE_ADDRESS, spec.PREFIX_LEN)
    rec["git_pid"] = host.daemon(
        ["nsenter", f"--net={host.NETNS_DIR / lay.bridge_netns}", "git", "daemon",
         "--reuseaddr", f"--listen={spec.BRIDGE_ADDRESS}", f"--port={spec.GIT_PORT}",
         f"--base-path={lay.dir}", str(lay.repo)],
        lay.dir / "git-daemon.log")  # fmt: skip
    save_record(lay, rec)
    for n in lay.nodes:
        host.add_netns(n.netns)
        host.link_node(lay.bridge_netns, n.veth, n.netns, n.address, spec.PREFIX_LEN,
                       spec.BRIDGE_ADDRESS)  # fmt: skip


def start_forwarder(lay: Layout, rec: dict[str, Any]) -> list[str]:
    routes, endpoints = [], []
    for m in lay.managers:
        port = forward.free_port()
        endpoints.append(f"127.0.0.1:{port}")
        routes.append(f"127.0.0.1:{port}={host.NETNS_DIR / m.netns}={m.address}:{spec.CLIENT_PORT}")
    rec["forward_pid"] = host.daemon([sys.executable, "-m", "reconciler.sandbox.forward", *routes],
                                     lay.dir / "forward.log",
                                     env={"PYTHONPATH": str(REPO_ROOT)})  # fmt: skip
    rec["etcd"] = endpoints
    save_record(lay, rec)
    return endpoints


def boot_node(lay: Layout, n: NodeSpec, rec: dict[str, Any]) -> node.Booted:
    p = node.Paths(lay.node_dir(n.name))
    b = node.boot(p, n.name, f"sk{lay.tag}-{n.name}", n.netns, f"{lay.cgroup_name}/{n.name}")
    rec["nodes"][n.name] = {"nspawn_pid": b.nspawn_pid, "leader_pid": b.leader_pid}
    save_record(lay, rec)
    return b


def write_cluster_json(lay: Layout, rec: dict[str, Any]) -> None:
    leaders = {k: v["leader_pid"] for k, v in rec["nodes"].items()}
    doc = spec.cluster_doc(lay, rec["etcd"], leaders)
    tmp = lay.cluster_json.with_suffix(".tmp")
    tmp.write_text(spec.dumps(doc))
    tmp.replace(lay.cluster_json)


def publish(lay: Layout, rec: dict[str, Any], rev: str) -> None:
    argv = [sys.executable, "-m", "reconciler", "publish", "--repo", str(lay.work),
            "--etcd", rec["etcd"][0], rev]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    deadline = time.monotonic() + 60
    while True:
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
        if out.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise host.SandboxError(f"publish {rev[:12]} failed: {out.stderr.strip()[-1000:]}")
        time.sleep(1)


def up(directory: Path, managers: int, workers: int, source: Path, timeout: float) -> Timer:
    lay = spec.layout(directory, managers, workers)
    root = preflight.check(lay, managers, workers, source)  # raises before anything starts
    t = Timer(_say)
    lay.dir.mkdir(parents=True, exist_ok=True)
    rec: dict[str, Any] = {"dir": str(lay.dir), "managers": managers, "workers": workers,
                           "nodes": {}, "etcd": []}  # fmt: skip
    save_record(lay, rec)
    userdata = write_userdata(lay)
    rev = make_state_repo(lay, source)
    rec["revision"] = rev
    save_record(lay, rec)
    etcd_tar = images.etcd_tarball(root)
    agent_tar = images.agent_tarball(root, lay.dir / "images")
    t.done("images built")
    start_network(lay, rec)
    for n in lay.nodes:
        node.prepare(root, node.Paths(lay.node_dir(n.name)), n.name)
    t.done("roots")
    for n in lay.nodes:
        node.ignite(node.Paths(lay.node_dir(n.name)), userdata[str(n.role)])
    t.done("ignition")
    booted = {n.name: boot_node(lay, n, rec) for n in lay.nodes}
    for n in lay.nodes:
        node.wait_active(booted[n.name].leader_pid, ("docker.service",), 120, n.name)
    t.done("boot")
    with ThreadPoolExecutor(max_workers=2) as pool:
        list(pool.map(lambda n: images.load_into(booted[n.name].leader_pid, etcd_tar, agent_tar),
                      lay.nodes))  # fmt: skip
    t.done("images loaded")
    start_forwarder(lay, rec)
    write_cluster_json(lay, rec)
    deadline = time.monotonic() + timeout
    watch.etcd_formed(rec["etcd"], len(lay.managers), deadline)
    t.done("etcd formed")
    publish(lay, rec, rev)
    watch.swarm_formed([booted[m.name].leader_pid for m in lay.managers], managers, workers,
                       deadline)  # fmt: skip
    t.done("swarm formed")
    watch.converged(rec["etcd"][0], [n.name for n in lay.nodes], rev, deadline, _say)
    t.done("converged")
    return t


# ---------------------------------------------------------------- reboot and down


def reboot(directory: Path, name: str, timeout: float) -> Timer:
    """Crash a node (every process killed at once) and boot it again from the same disk."""
    rec = load_record(directory)
    lay = layout_of(rec)
    try:
        n = lay.node(name)
    except KeyError:
        names = ", ".join(x.name for x in lay.nodes)
        raise UsageError(f"{directory} has no node {name!r}; its nodes: {names}") from None
    t = Timer(_say)
    since = time.monotonic()
    node.crash(f"{lay.cgroup_name}/{n.name}")
    t.done(f"{name} killed")
    b = boot_node(lay, n, rec)
    write_cluster_json(lay, rec)
    node.wait_active(b.leader_pid, ("docker.service",), 120, name)
    t.done("boot")
    deadline = time.monotonic() + timeout
    if n.role is spec.Role.MANAGER:
        watch.etcd_formed(rec["etcd"], len(lay.managers), deadline)
        t.done("etcd member back")
    watch.in_swarm(b.leader_pid, n.role is spec.Role.MANAGER, deadline)
    pids = [rec["nodes"][m.name]["leader_pid"] for m in lay.managers]
    watch.swarm_formed(pids, rec["managers"], rec["workers"], deadline)
    t.done("swarm rejoined")
    desired = watch.desired_revision(rec["etcd"][0])
    watch.converged(rec["etcd"][0], [x.name for x in lay.nodes], desired, deadline, _say,
                    fresh={n.name: since})  # fmt: skip
    t.done("converged")
    return t


def down(directory: Path) -> list[str]:
    """Stop and remove everything; the list of what could not be removed (empty: clean)."""
    rec = load_record(directory)
    lay = layout_of(rec)
    for key, marker in (("forward_pid", "reconciler.sandbox.forward"), ("git_pid", str(lay.repo))):
        if rec.get(key):
            host.stop_process(int(rec[key]), marker)
    nodes = rec.get("nodes", {})
    with ThreadPoolExecutor(max_workers=max(1, len(lay.nodes))) as pool:
        list(pool.map(lambda n: node.shutdown(int(nodes.get(n.name, {}).get("nspawn_pid", 0)),
                                              f"{lay.cgroup_name}/{n.name}", timeout=5),
                      lay.nodes))  # fmt: skip
    host.kill_cgroup(lay.cgroup_name)
    for m in preflight.mounts_under(lay.dir):
        host.umount(Path(m))
    for n in lay.nodes:
        host.del_netns(n.netns)
    host.del_netns(lay.bridge_netns)
    left = preflight.leftovers(lay)
    if not left:
        subprocess.run(["rm", "-rf", "--one-file-system", str(lay.dir)], check=False)
    return left
