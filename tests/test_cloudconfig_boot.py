"""First boot, for real: the generated facts script and etcd units form a working etcd.

What a node does at first boot is replayed on this machine with the generated files: the
facts script (decoded from the Ignition output) runs for three managers and a worker, each in
its own root directory, with loopback addresses standing in for private ones (127.0.0.11-13
are distinct local addresses); the agent.yaml it writes must load through the agent's own
option loader. Then the etcd argv of the generated ``etcd-member.service``
and ``etcd-proxy.service`` — expanded from their env files exactly as systemd would — start
real etcd 3.4 members and a gRPC proxy (``docker run IMAGE`` replaced by the etcd binary).
The members must form one cluster, serve the v2 API locksmith needs, and a write through the
worker's proxy must be readable on a member. Both bootstraps are covered: static addresses,
and discovery through a real etcd v2 discovery endpoint on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from cloudconfig.generate import generate
from cloudconfig.params import load_params
from reconciler.commands import agent as agent_command
from reconciler.config import Config
from reconciler.config import load as load_config
from reconciler.models import Role
from tests.fixtures.etcd import ETCD, EtcdServer, _Proc, free_ports
from tests.fixtures.userdata import (
    docker_run_parts,
    exec_argv,
    ignition_files,
    parse_env,
    parse_unit,
)

ETCDCTL = "/usr/bin/etcdctl"
MANAGERS = ["127.0.0.11", "127.0.0.12", "127.0.0.13"]


def params(etcd: str, client: int, peer: int) -> bytes:
    return f"""\
cluster: {{name: boot, managers: 3}}
etcd:
  {etcd}
  client_port: {client}
  peer_port: {peer}
repo: {{url: https://git.lab.internal/ops/cluster.git, branch: main}}
agent: {{image: registry.lab.internal/swarmkeeper:0.1.0}}
prefix: /sk
""".encode()


def user_data(text: bytes) -> dict[str, dict[str, Any]]:
    out = generate(load_params("params.yml", text), ["ignition"])
    return {role: json.loads(out[f"{role}.ign"]) for role in ("manager", "worker")}


def boot(tmp: Path, doc: dict[str, Any], node: str, address: str) -> Path:
    """Lay the node's /etc/swarmkeeper files into a root and run the facts script there."""
    root = tmp / node
    for path, (data, mode) in ignition_files(doc).items():
        if path.startswith("/etc/swarmkeeper/"):
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            target.chmod(mode)
    env = {**os.environ, "SWARMKEEPER_ROOT": str(root), "SWARMKEEPER_NODE": node,
           "SWARMKEEPER_ADDRESS": address}  # fmt: skip
    r = subprocess.run(
        ["/bin/sh", str(root / "etc/swarmkeeper/node-facts.sh")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return root / "etc/swarmkeeper"


def agent_config(path: Path) -> Config:
    p = argparse.ArgumentParser()
    agent_command.add_arguments(p)
    return load_config(p.parse_args(["--config", str(path)]), environ={})


def unit_exec(doc: dict[str, Any], name: str, conf: Path) -> list[str]:
    """The etcd argv of a generated unit, expanded from the env files the unit names."""
    (u,) = [u for u in doc["systemd"]["units"] if u["name"] == name]
    svc = parse_unit(u["contents"])["Service"]
    env: dict[str, str] = {}
    for f in svc["EnvironmentFile"]:
        path = conf / Path(f.lstrip("-")).name
        if path.exists():
            env.update(parse_env(path.read_text()))
    _, image, args = docker_run_parts(exec_argv(svc["ExecStart"][0], env))
    assert image == "quay.io/coreos/etcd:v3.5.17"
    assert args[0] == "etcd"
    return [ETCD, *args[1:]]


def as_local_member(argv: list[str], data_dir: Path) -> list[str]:
    """On a node each member owns 127.0.0.1; here three share it, so keep only the private
    client URL (the proxy takes 127.0.0.1), and point the data dir at a temp dir."""
    out = list(argv)
    i = out.index("--listen-client-urls")
    out[i + 1] = out[i + 1].split(",")[0]
    out[out.index("--data-dir") + 1] = str(data_dir)
    return [*out, "--log-level", "warn", "--logger", "zap"]


@contextlib.contextmanager
def processes(tmp: Path) -> Iterator[list[_Proc]]:
    procs: list[_Proc] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()


def spawn(procs: list[_Proc], tmp: Path, name: str, argv: list[str]) -> _Proc:
    p = _Proc(name, argv, tmp / f"{name}.log")
    p.spawn()
    procs.append(p)
    return p


def etcdctl(endpoint: str, *args: str) -> str:
    r = subprocess.run(
        [ETCDCTL, "--endpoints", endpoint, "--dial-timeout", "2s", *args],
        env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return r.stdout


def wait_members(endpoint: str, n: int, procs: list[_Proc]) -> list[str]:
    """The member list once all n members have published their own names (with a static
    bootstrap the list first shows the labels of the queried member's --initial-cluster)."""
    deadline = time.monotonic() + 30
    while True:
        r = subprocess.run(
            [ETCDCTL, "--endpoints", endpoint, "--dial-timeout", "1s", "member", "list"],
            env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        lines = [ln for ln in r.stdout.splitlines() if ", started, " in ln]
        names = sorted(ln.split(", ")[2] for ln in lines)
        if r.returncode == 0 and names == [f"mgr-{i + 1}" for i in range(n)]:
            return lines
        if time.monotonic() > deadline:
            logs = "\n".join(f"{p.name}: {p.log_tail()}" for p in procs)
            raise AssertionError(f"members {names}, not mgr-1..{n}:\n{logs}")
        time.sleep(0.3)


def check_cluster_and_proxy(tmp: Path, ud: dict[str, dict[str, Any]], procs: list[_Proc],
                            client: int, peer: int, worker_conf: Path) -> None:  # fmt: skip
    members = wait_members(f"{MANAGERS[0]}:{client}", 3, procs)
    names = sorted(ln.split(", ")[2] for ln in members)
    assert names == ["mgr-1", "mgr-2", "mgr-3"]
    for ln in members:  # each advertises its private address
        name = ln.split(", ")[2]
        addr = MANAGERS[int(name[-1]) - 1]
        assert f"http://{addr}:{peer}" in ln and f"http://{addr}:{client}" in ln
    # locksmith's etcd-lock speaks the v2 API: the generated flags keep it on
    with urllib.request.urlopen(f"http://{MANAGERS[1]}:{client}/v2/keys/", timeout=5) as resp:
        assert json.loads(resp.read())["action"] == "get"
    # the worker's proxy, from the generated unit, in front of the members it was told about
    proxy = unit_exec(ud["worker"], "etcd-proxy.service", worker_conf)
    assert proxy[1:] == [
        "grpc-proxy", "start",
        "--endpoints=" + ",".join(f"http://{a}:{client}" for a in MANAGERS),
        f"--listen-addr=127.0.0.1:{client}",
    ]  # fmt: skip
    spawn(procs, tmp, "proxy", proxy)
    deadline = time.monotonic() + 20
    while True:
        r = subprocess.run(
            [ETCDCTL, "--endpoints", f"127.0.0.1:{client}", "--dial-timeout", "1s", "put", "/sk/k", "v"],
            env={**os.environ, "ETCDCTL_API": "3"}, capture_output=True, text=True, timeout=10,
        )  # fmt: skip
        if r.returncode == 0:
            break
        assert time.monotonic() < deadline, r.stderr
        time.sleep(0.3)
    assert etcdctl(f"{MANAGERS[2]}:{client}", "get", "/sk/k", "--print-value-only") == "v\n"


def test_static_bootstrap_forms_a_cluster_and_the_worker_proxy_reaches_it(tmp_path: Path) -> None:
    client, peer = free_ports(2)
    ud = user_data(params(f"static: [{', '.join(MANAGERS)}]", client, peer))
    with processes(tmp_path) as procs:
        confs = [boot(tmp_path, ud["manager"], f"mgr-{i + 1}", a) for i, a in enumerate(MANAGERS)]
        flags = parse_env((confs[0] / "etcd-bootstrap.env").read_text())
        assert flags == {
            "ETCD_IMAGE": "quay.io/coreos/etcd:v3.5.17",
            "ETCD_BOOTSTRAP_FLAGS": (
                f"--initial-cluster mgr-1=http://127.0.0.11:{peer},"
                f"m-127-0-0-12=http://127.0.0.12:{peer},m-127-0-0-13=http://127.0.0.13:{peer} "
                "--initial-cluster-state new --initial-cluster-token boot --enable-v2=true"
            ),
        }
        agent = yaml.safe_load((confs[1] / "agent.yaml").read_text())
        assert agent == {
            "repo": "https://git.lab.internal/ops/cluster.git", "branch": "main", "role": "manager",
            "etcd": f"127.0.0.1:{client}", "prefix": "/sk", "scope": "system",
            "node": "mgr-2", "address": "127.0.0.12",
        }  # fmt: skip
        # the agent's own option loader accepts it: the keys are its flags
        cfg = agent_config(confs[1] / "agent.yaml")
        assert (cfg.node, cfg.role, cfg.address, cfg.etcd, cfg.prefix, cfg.scope) == (
            "mgr-2", Role.MANAGER, "127.0.0.12", (f"127.0.0.1:{client}",), "/sk", "system",
        )  # fmt: skip
        assert (cfg.repo, cfg.branch) == ("https://git.lab.internal/ops/cluster.git", "main")
        assert parse_env((confs[2] / "node.env").read_text()) == {
            "SWARMKEEPER_NODE": "mgr-3", "SWARMKEEPER_ROLE": "manager",
            "SWARMKEEPER_CLUSTER": "boot", "SWARMKEEPER_PREFIX": "/sk",
            "SWARMKEEPER_MANAGERS": "3", "PRIVATE_IPV4": "127.0.0.13",
            "ETCD_ENDPOINTS": f"http://127.0.0.1:{client}",
        }  # fmt: skip
        assert parse_env((confs[0] / "locksmithd.env").read_text()) == {
            "LOCKSMITHD_ENDPOINT": f"http://127.0.0.1:{client}", "LOCKSMITHD_GROUP": "manager",
        }  # fmt: skip
        for i, conf in enumerate(confs):
            argv = unit_exec(ud["manager"], "etcd-member.service", conf)
            spawn(procs, tmp_path, f"mgr-{i + 1}", as_local_member(argv, tmp_path / f"d{i}"))
        worker = boot(tmp_path, ud["worker"], "wrk-1", "127.0.0.21")
        # workers' locksmith asks the members (v2), not their own v3-only proxy
        assert parse_env((worker / "locksmithd.env").read_text()) == {
            "LOCKSMITHD_ENDPOINT": ",".join(f"http://{a}:{client}" for a in MANAGERS),
            "LOCKSMITHD_GROUP": "worker",
        }
        check_cluster_and_proxy(tmp_path, ud, procs, client, peer, worker)


def test_discovery_bootstrap_and_the_worker_finds_the_members_there(tmp_path: Path) -> None:
    client, peer = free_ports(2)
    with EtcdServer(extra_args=["--enable-v2"]) as disc, processes(tmp_path) as procs:
        disc.start()
        url = f"{disc.client_url}/v2/keys/discovery/tok123"
        req = urllib.request.Request(
            f"{url}/_config/size", data=b"value=3", method="PUT",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        urllib.request.urlopen(req, timeout=5).close()
        ud = user_data(params(f"discovery: {url}", client, peer))
        for i, addr in enumerate(MANAGERS):
            conf = boot(tmp_path, ud["manager"], f"mgr-{i + 1}", addr)
            assert parse_env((conf / "etcd-bootstrap.env").read_text())["ETCD_BOOTSTRAP_FLAGS"] == (
                f"--discovery {url} --enable-v2=true"
            )
            argv = unit_exec(ud["manager"], "etcd-member.service", conf)
            spawn(procs, tmp_path, f"mgr-{i + 1}", as_local_member(argv, tmp_path / f"d{i}"))
        wait_members(f"{MANAGERS[0]}:{client}", 3, procs)
        # the worker's facts script reads the registered peers from the discovery URL
        worker = boot(tmp_path, ud["worker"], "wrk-1", "127.0.0.21")
        assert parse_env((worker / "etcd-bootstrap.env").read_text())["ETCD_MEMBERS"] == ",".join(
            f"http://{a}:{client}" for a in MANAGERS
        )
        check_cluster_and_proxy(tmp_path, ud, procs, client, peer, worker)
