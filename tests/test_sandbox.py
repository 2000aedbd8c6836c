"""The sandbox's pure plan, its bad-input errors, and its two small real parts.

Pure: the layout (names, addresses, namespaces), the params it writes (through the real
``cloudconfig`` generator and Ignition validator), the state it seeds, cluster.json, the
forwarder's and the Vault stand-in's argument parsing. Real: ``sandbox up`` refusing bad
input before it creates anything; the forwarder carrying bytes from 127.0.0.1 into a network
namespace of the test's own; the Vault stand-in answering seal-status. The whole cluster runs
in tests/test_sandbox_cluster.py (its own lane).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from cloudconfig.generate import generate
from cloudconfig.params import load_params
from reconciler.sandbox import forward, preflight, spec, vault_standin
from reconciler.sandbox.spec import Role

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("managers", "workers", "names", "addresses"),
    [
        (1, 0, ["manager-1"], ["10.213.0.11"]),
        (3, 2, ["manager-1", "manager-2", "manager-3", "worker-1", "worker-2"],
         ["10.213.0.11", "10.213.0.12", "10.213.0.13", "10.213.0.101", "10.213.0.102"]),
        (5, 1, [f"manager-{i}" for i in range(1, 6)] + ["worker-1"],
         [f"10.213.0.{10 + i}" for i in range(1, 6)] + ["10.213.0.101"]),
    ],
)  # fmt: skip
def test_layout_names_and_addresses(
    managers: int, workers: int, names: list[str], addresses: list[str]
) -> None:
    lay = spec.layout(Path("/srv/sb"), managers, workers)
    assert [n.name for n in lay.nodes] == names
    assert [n.address for n in lay.nodes] == addresses
    assert len(lay.managers) == managers
    assert all(n.role is (Role.MANAGER if n.name.startswith("manager") else Role.WORKER)
               for n in lay.nodes)  # fmt: skip
    netns = [lay.bridge_netns, *(n.netns for n in lay.nodes)]
    assert len(set(netns)) == len(netns)
    assert all(len(n.veth) <= 15 for n in lay.nodes)  # Linux interface names


def test_two_directories_never_share_namespace_names() -> None:
    a, b = spec.layout(Path("/tmp/a"), 3, 1), spec.layout(Path("/tmp/b"), 3, 1)
    names_a = {a.bridge_netns, *(n.netns for n in a.nodes), a.cgroup_name}
    names_b = {b.bridge_netns, *(n.netns for n in b.nodes), b.cgroup_name}
    assert not names_a & names_b


@pytest.mark.parametrize(
    ("managers", "workers", "errors"),
    [(3, 2, 0), (1, 0, 0), (5, 20, 0), (2, 1, 1), (4, 0, 1), (0, 1, 1), (3, -1, 1), (2, 21, 2)],
)
def test_check_counts(managers: int, workers: int, errors: int) -> None:
    assert len(spec.check_counts(managers, workers)) == errors


def test_params_generate_ignition_that_validates(tmp_path: Path) -> None:
    lay = spec.layout(tmp_path, 3, 2)
    text = spec.params_yaml(lay)
    out = generate(load_params("params.yml", text.encode()), ["ignition"])
    for role in ("manager", "worker"):
        path = tmp_path / f"{role}.ign"
        path.write_bytes(out[f"{role}.ign"])
        r = subprocess.run(["ignition-validate", str(path)], capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
    doc = yaml.safe_load(text)
    assert doc["etcd"]["static"] == ["10.213.0.11", "10.213.0.12", "10.213.0.13"]
    assert doc["agent"]["image"] == spec.AGENT_IMAGE
    assert doc["repo"]["url"] == f"git://{spec.BRIDGE_ADDRESS}/state.git"
    daemon = json.loads(doc["files"][0]["content"])
    assert daemon == {"bridge": "none", "iptables": False, "ip-masq": False, "ip-forward": False}


def test_cluster_yaml_names_the_local_images() -> None:
    doc = yaml.safe_load(spec.cluster_yaml(3))
    assert doc["managers"] == 3
    assert doc["vars"] == {"ETCD_IMAGE": spec.ETCD_IMAGE, "VAULT_IMAGE": spec.VAULT_IMAGE}
    assert "notify" not in doc  # no Slack from a sandbox


def test_cluster_json_has_the_contracted_shape(tmp_path: Path) -> None:
    lay = spec.layout(tmp_path, 3, 1)
    doc = spec.cluster_doc(lay, ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"],
                           {"manager-1": 11, "worker-1": 14})  # fmt: skip
    assert set(doc) == {"etcd", "prefix", "repo", "nodes"}
    assert doc["repo"] == str(tmp_path / "state.git")
    nodes = doc["nodes"]
    assert isinstance(nodes, list)
    assert nodes[0] == {"name": "manager-1", "role": "manager", "address": "10.213.0.11",
                        "leader_pid": 11}  # fmt: skip
    assert [n["role"] for n in nodes] == ["manager", "manager", "manager", "worker"]


@pytest.mark.parametrize(
    ("text", "route"),
    [
        ("127.0.0.1:5=/run/netns/x=10.0.0.1:2379",
         forward.Route("127.0.0.1", 5, "/run/netns/x", "10.0.0.1", 2379)),
        ("127.0.0.1:5=/run/netns/x", None),
        ("127.0.0.1=/run/netns/x=10.0.0.1:2379", None),
        ("127.0.0.1:a=/n=10.0.0.1:1", None),
    ],
)  # fmt: skip
def test_parse_route(text: str, route: forward.Route | None) -> None:
    if route is None:
        with pytest.raises(ValueError, match=text.split("=")[0]):
            forward.parse_route(text)
    else:
        assert forward.parse_route(text) == route


@pytest.mark.parametrize(
    ("hcl", "address"),
    [
        ('listener "tcp" {\n  address = "0.0.0.0:8200"\n  tls_disable = 1\n}\n', ("0.0.0.0", 8200)),
        ('listener "tcp" { address = "127.0.0.1:8300" }', ("127.0.0.1", 8300)),
        ("ui = true\n", ("0.0.0.0", 8200)),
    ],
)
def test_vault_standin_reads_its_listener(tmp_path: Path, hcl: str, address: tuple[str, int]) -> None:  # fmt: skip
    (tmp_path / "v.hcl").write_text(hcl)
    assert vault_standin.listen_address([f"-config={tmp_path / 'v.hcl'}"]) == address


def test_vault_standin_answers_like_an_unsealed_vault(tmp_path: Path) -> None:
    port = forward.free_port()
    (tmp_path / "v.hcl").write_text(f'listener "tcp" {{ address = "127.0.0.1:{port}" }}')
    proc = subprocess.Popen([sys.executable, vault_standin.__file__, "server",
                             f"-config={tmp_path / 'v.hcl'}"], stdout=subprocess.PIPE)  # fmt: skip
    try:
        body = None
        for _ in range(100):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/sys/seal-status") as r:
                    body = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.05)
        assert body is not None and body["sealed"] is False and body["initialized"] is True
    finally:
        proc.terminate()
        proc.wait(5)


def _argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "reconciler", "sandbox", *args]


def _sk(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_argv(*args), capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})  # fmt: skip


def test_up_refuses_two_managers_before_creating_anything(tmp_path: Path) -> None:
    d = tmp_path / "sb"
    r = _sk("up", "--managers", "2", "--workers", "1", "--dir", str(d))
    assert r.returncode == 1
    assert "--managers must be 1, 3 or 5" in r.stderr and "nothing was started" in r.stderr
    assert "Traceback" not in r.stderr
    assert not d.exists()


def test_up_refuses_a_busy_directory(tmp_path: Path) -> None:
    (tmp_path / "cluster.json").write_text("{}")
    r = _sk("up", "--managers", "1", "--workers", "0", "--dir", str(tmp_path))
    assert r.returncode == 1
    assert f"{tmp_path} is not empty" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.json"]


def test_down_of_a_directory_without_a_sandbox_is_a_clear_error(tmp_path: Path) -> None:
    r = _sk("down", "--dir", str(tmp_path))
    assert r.returncode == 1 and "no sandbox here" in r.stderr and "Traceback" not in r.stderr


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"sktest-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_forwarder_carries_bytes_into_a_namespace(netns: str) -> None:
    # an echo server on the namespace's own loopback: unreachable from the host directly
    srv = forward.socket_in(f"/run/netns/{netns}")
    srv.setblocking(True)
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    target = srv.getsockname()[1]

    def echo() -> None:
        conn, _ = srv.accept()
        with conn:
            while data := conn.recv(4096):
                conn.sendall(data.upper())

    threading.Thread(target=echo, daemon=True).start()
    port = forward.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "reconciler.sandbox.forward",
                             f"127.0.0.1:{port}=/run/netns/{netns}=127.0.0.1:{target}"],
                            env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    try:
        for _ in range(100):
            try:
                c = socket.create_connection(("127.0.0.1", port), timeout=5)
                break
            except OSError:
                time.sleep(0.05)
        with c:
            c.sendall(b"through the namespace")
            assert c.recv(4096) == b"THROUGH THE NAMESPACE"
    finally:
        proc.terminate()
        proc.wait(5)
        srv.close()


def test_a_missing_package_is_named_with_the_command_that_installs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        preflight, "BINARIES", (*preflight.BINARIES, ("/nonexistent/frob", "frob-utils"))
    )
    lay = spec.layout(tmp_path / "sb", 1, 1)
    found = preflight.problems(lay, 1, 1, REPO)
    assert "/nonexistent/frob is missing: apt-get install -y frob-utils" in found


def test_up_without_a_node_root_says_how_to_build_it(tmp_path: Path) -> None:
    d = tmp_path / "sb"
    r = _sk(
        "up",
        "--managers",
        "1",
        "--workers",
        "0",
        "--dir",
        str(d),
        env={"SWARMKEEPER_CACHE": str(tmp_path / "cache")},
    )
    assert r.returncode == 1
    assert f"no node root at {tmp_path / 'cache' / 'node-root'}" in r.stderr
    assert "build-root.sh" in r.stderr and not d.exists()


hosts = st.from_regex(r"[a-z0-9][a-z0-9.\-]{0,20}", fullmatch=True)
ports = st.integers(min_value=0, max_value=65535)
paths = st.from_regex(r"/[A-Za-z0-9_./\-]{1,30}", fullmatch=True)


@given(hosts, ports, paths, hosts, ports)
def test_parse_route_roundtrips(lh: str, lp: int, ns: str, th: str, tp: int) -> None:
    r = forward.Route(lh, lp, ns, th, tp)
    assert forward.parse_route(f"{lh}:{lp}={ns}={th}:{tp}") == r


def test_down_after_an_up_that_stopped_at_its_first_step(tmp_path: Path) -> None:
    # `up` records itself before it starts anything: `down` must clean up from there too
    d = tmp_path / "sb"
    d.mkdir()
    record = {"dir": str(d), "managers": 1, "workers": 1, "nodes": {},
              "etcd": []}  # fmt: skip
    (d / "sandbox.json").write_text(json.dumps(record))
    (d / "params.yml").write_text("cluster: {}\n")
    # run under a wrapper whose command line names the dir, as `timeout 60 ... down` does
    r = subprocess.run(["sh", "-c", '"$@"; :', str(d), *_argv("down", "--dir", str(d))],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "nothing left behind" in r.stdout and not d.exists()


def test_reboot_of_an_unknown_node_names_the_nodes(tmp_path: Path) -> None:
    record = {"dir": str(tmp_path), "managers": 1, "workers": 1, "nodes": {},
              "etcd": []}  # fmt: skip
    (tmp_path / "sandbox.json").write_text(json.dumps(record))
    r = _sk("reboot", "manager-9", "--dir", str(tmp_path))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "no node 'manager-9'; its nodes: manager-1, worker-1" in r.stderr
