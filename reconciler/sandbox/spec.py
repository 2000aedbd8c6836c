"""What a sandbox is, as plain data: names, addresses, params, state tree and cluster.json.

Pure: every function maps its inputs to values and nothing here touches the machine, so the
shape of a sandbox is tested with tables. The machinery in ``host``/``node``/``cluster``
reads a ``Layout`` and does what it says.

Addressing: every sandbox uses 10.213.0.0/24 inside namespaces it owns (a bridge namespace
and one per node), so two sandboxes never see each other and nothing is added to the host's
network. The bridge holds .1 (it serves the state repo over ``git daemon``); managers get
.11-.15 and workers .101 onwards. Namespace names carry a short hash of the sandbox's
directory, so two sandboxes in two directories never collide.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml

SUBNET_PREFIX = "10.213.0"
BRIDGE_ADDRESS = f"{SUBNET_PREFIX}.1"
PREFIX_LEN = 24
CLIENT_PORT = 2379
PEER_PORT = 2380
GIT_PORT = 9418
MANAGER_COUNTS = (1, 3, 5)
MAX_WORKERS = 20
CLUSTER_NAME = "sandbox"
ETCD_PREFIX = "/swarmkeeper"

ETCD_IMAGE = "swarmkeeper-etcd:sandbox"
AGENT_IMAGE = "swarmkeeper:sandbox"
VAULT_IMAGE = "swarmkeeper-vault-standin:sandbox"

# dockerd inside a node: no bridge, no iptables, no forwarding (nspawn keeps /proc/sys
# read-only); every container the units run uses --net host.
DAEMON_JSON = '{"bridge": "none", "iptables": false, "ip-masq": false, "ip-forward": false}\n'


class Role(StrEnum):
    MANAGER = "manager"
    WORKER = "worker"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    name: str
    role: Role
    address: str
    netns: str  # its network namespace (/run/netns/NAME)
    veth: str  # the bridge's end of its link (the node's end is eth0)


@dataclass(frozen=True, slots=True)
class Layout:
    dir: Path
    tag: str  # short hash of dir: names of namespaces and cgroups
    bridge_netns: str
    nodes: tuple[NodeSpec, ...]

    @property
    def managers(self) -> tuple[NodeSpec, ...]:
        return tuple(n for n in self.nodes if n.role is Role.MANAGER)

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    # where things live under dir
    @property
    def repo(self) -> Path:
        return self.dir / "state.git"

    @property
    def work(self) -> Path:
        return self.dir / "state-work"

    @property
    def record(self) -> Path:
        return self.dir / "sandbox.json"

    @property
    def cluster_json(self) -> Path:
        return self.dir / "cluster.json"

    def node_dir(self, name: str) -> Path:
        return self.dir / "nodes" / name

    @property
    def cgroup_name(self) -> str:
        return f"swarmkeeper-sandbox-{self.tag}"


def check_counts(managers: int, workers: int) -> list[str]:
    """Every problem with the requested size, as messages (empty: fine)."""
    out = []
    if managers not in MANAGER_COUNTS:
        out.append(f"--managers must be 1, 3 or 5 (an odd etcd and swarm quorum), not {managers}")
    if not 0 <= workers <= MAX_WORKERS:
        out.append(f"--workers must be between 0 and {MAX_WORKERS}, not {workers}")
    return out


def dir_tag(directory: Path) -> str:
    return hashlib.sha256(str(directory).encode()).hexdigest()[:6]


def layout(directory: Path, managers: int, workers: int) -> Layout:
    """The names and addresses of a sandbox in ``directory`` (an absolute path)."""
    tag = dir_tag(directory)
    nodes = []
    for i in range(1, managers + 1):
        nodes.append(NodeSpec(f"manager-{i}", Role.MANAGER, f"{SUBNET_PREFIX}.{10 + i}",
                              f"sk{tag}-m{i}", f"vm{i}"))  # fmt: skip
    for i in range(1, workers + 1):
        nodes.append(NodeSpec(f"worker-{i}", Role.WORKER, f"{SUBNET_PREFIX}.{100 + i}",
                              f"sk{tag}-w{i}", f"vw{i}"))  # fmt: skip
    return Layout(directory, tag, f"sk{tag}-br", tuple(nodes))


def repo_url() -> str:
    return f"git://{BRIDGE_ADDRESS}/state.git"


def params_yaml(lay: Layout) -> str:
    """The ``params.yml`` an operator would write for this cluster (static etcd bootstrap)."""
    doc = {
        "cluster": {"name": CLUSTER_NAME, "managers": len(lay.managers)},
        "etcd": {"static": [m.address for m in lay.managers], "image": ETCD_IMAGE},
        "repo": {"url": repo_url(), "branch": "main"},
        "agent": {"image": AGENT_IMAGE},
        "prefix": ETCD_PREFIX,
        # no locksmith or update engine in the stand-in OS
        "updates": {"reboot_strategy": "off"},
        "files": [{"path": "/etc/docker/daemon.json", "content": DAEMON_JSON, "mode": "0644"}],
    }
    head = "# Written by `swarmkeeper sandbox up`: the params of this sandbox's cluster.\n"
    return head + yaml.safe_dump(doc, sort_keys=True, default_flow_style=False)


def cluster_yaml(managers: int) -> str:
    """The sandbox's ``state/cluster.yaml``: the repo's own, with images that exist here."""
    doc = {
        "name": CLUSTER_NAME,
        "managers": managers,
        "prefix": ETCD_PREFIX,
        "rollout": {"max_unavailable": 1},
        "vars": {"ETCD_IMAGE": ETCD_IMAGE, "VAULT_IMAGE": VAULT_IMAGE},
    }
    return "# The sandbox's cluster (see docs/sandbox.md)\n" + yaml.safe_dump(doc, sort_keys=True)


def node_yaml(n: NodeSpec) -> str:
    return f"# a node of the sandbox\nrole: {n.role}\n"


def cluster_doc(lay: Layout, etcd: list[str], leaders: dict[str, int]) -> dict[str, object]:
    """``DIR/cluster.json``: what an operator needs to reach the cluster from outside."""
    return {
        "etcd": etcd,
        "prefix": ETCD_PREFIX,
        "repo": str(lay.repo),
        "nodes": [
            {
                "name": n.name,
                "role": str(n.role),
                "address": n.address,
                "leader_pid": leaders.get(n.name, 0),
            }
            for n in lay.nodes
        ],
    }


def dumps(doc: object) -> str:
    return json.dumps(doc, indent=2, sort_keys=False) + "\n"
