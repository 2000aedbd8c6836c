"""The typed values every layer shares: ids, enums and the rendered ``NodeSpec``.

These are plain frozen, slotted dataclasses with no behaviour beyond small derived views, so
the pure core (desired, plan) and the world layer (actuators) can exchange them freely.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NewType

NodeName = NewType("NodeName", str)
UnitName = NewType("UnitName", str)
Revision = NewType("Revision", str)  # a full git commit sha, or "worktree" for a plain directory

WORKTREE = Revision("worktree")


class Role(StrEnum):
    MANAGER = "manager"
    WORKER = "worker"


class OnChange(StrEnum):
    """What to do with a running unit when its content (or a file it uses) changes."""

    RESTART = "restart"
    RELOAD = "reload"
    IGNORE = "ignore"


class CheckKind(StrEnum):
    HTTP = "http"
    TCP = "tcp"
    UNIT_ACTIVE = "unit_active"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """How the agent decides a registered service is healthy."""

    kind: CheckKind
    target: str = ""  # URL for http, host:port for tcp, unused for unit_active
    expect_json: tuple[tuple[str, object], ...] = ()  # key/value pairs the JSON body must hold


@dataclass(frozen=True, slots=True)
class Registration:
    """A service the agent keeps registered in etcd while its check passes."""

    name: str
    port: int
    check: HealthCheck
    interval: float = 15.0


@dataclass(frozen=True, slots=True)
class UnitSpec:
    """One desired systemd unit, in role order."""

    name: UnitName
    content: bytes
    on_change: OnChange = OnChange.RESTART
    enable: bool | None = None  # None: enable when the unit has an [Install] section
    timeout: float = 30.0  # seconds the health gate waits for it to become active
    register: Registration | None = None
    # Seconds a (re)started unit without a readiness protocol (Type=simple, exec, forking,
    # idle) must stay active before the gate passes it; None: the engine's default window.
    settle: float | None = None

    @property
    def digest(self) -> str:
        return sha256(self.content)


@dataclass(frozen=True, slots=True)
class FileSpec:
    """One desired file on the node (absolute path, exact bytes, mode)."""

    path: str
    content: bytes
    mode: int = 0o644

    @property
    def digest(self) -> str:
        return sha256(self.content)


@dataclass(frozen=True, slots=True)
class Notifier:
    """A notification target declared in cluster.yaml (secrets stay on the node)."""

    type: str  # "slack" | "webhook"
    url_env: str = ""
    url_file: str = ""
    channel: str = ""
    min_severity: str = "info"


@dataclass(frozen=True, slots=True)
class Cluster:
    """The cluster-wide settings from state/cluster.yaml."""

    name: str
    managers: int
    prefix: str = "/swarmkeeper"
    max_unavailable: int = 1
    vars: tuple[tuple[str, str], ...] = ()
    notify: tuple[Notifier, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What the node knows about itself; not in git (passed on the command line/config)."""

    name: NodeName
    role: Role | None = None  # None: taken from state/nodes/<name>.yaml
    address: str = "127.0.0.1"
    etcd_endpoints: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """Everything one node should run at one revision; the output of ``desired.render``."""

    node: NodeName
    role: Role
    revision: Revision
    cluster: Cluster
    units: tuple[UnitSpec, ...]
    files: tuple[FileSpec, ...]  # includes the environment file
    paused: bool = False
    labels: tuple[tuple[str, str], ...] = ()
    env_path: str = "/etc/swarmkeeper/node.env"
    unit_names: tuple[UnitName, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "unit_names", tuple(u.name for u in self.units))

    def unit(self, name: str) -> UnitSpec | None:
        for u in self.units:
            if u.name == name:
                return u
        return None
