"""What a Docker Engine says about its swarm, as frozen values (no I/O).

``SwarmEngine`` (``reconciler.actuators.swarm``) reads these from ``GET /info`` and the
manager's node list; membership and the leader decide from them. Parsing is kept here so
it can be tested on recorded engine answers without an engine.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from reconciler.models import Role

SWARM_PORT = 2377


class LocalState(StrEnum):
    """``Info.Swarm.LocalNodeState``."""

    INACTIVE = "inactive"
    PENDING = "pending"
    ACTIVE = "active"
    ERROR = "error"
    LOCKED = "locked"


class Availability(StrEnum):
    ACTIVE = "active"
    PAUSE = "pause"
    DRAIN = "drain"


@dataclass(frozen=True, slots=True)
class LocalSwarm:
    """What this engine says about its own membership."""

    state: LocalState
    node_id: str = ""
    node_addr: str = ""
    cluster_id: str = ""
    control_available: bool = False
    remote_managers: tuple[str, ...] = ()
    error: str = ""

    @property
    def role(self) -> Role | None:
        if self.state is not LocalState.ACTIVE:
            return None
        return Role.MANAGER if self.control_available else Role.WORKER


@dataclass(frozen=True, slots=True)
class SwarmNode:
    """One entry of the manager's node list."""

    id: str
    hostname: str
    role: Role
    availability: Availability
    state: str  # "ready" | "down" | "unknown" | "disconnected"
    addr: str
    version: int
    updated_at: float  # unix time of the last change of the node object
    reachability: str = ""  # managers: "reachable" | "unreachable" | "unknown"
    leader: bool = False
    manager_addr: str = ""  # managers: "ip:2377"


@dataclass(frozen=True, slots=True)
class JoinTokens:
    worker: str
    manager: str

    def for_role(self, role: Role) -> str:
        return self.manager if role is Role.MANAGER else self.worker


def _ts(value: str) -> float:
    """Docker's RFC 3339 timestamps have nanoseconds; Python parses microseconds."""
    if not value:
        return 0.0
    head, _, frac = value.rstrip("Z").partition(".")
    digits = "".join(c for c in frac if c.isdigit())[:6]
    return datetime.fromisoformat(f"{head}.{digits or '0'}+00:00").timestamp()


def parse_node(raw: Mapping[str, Any]) -> SwarmNode:
    spec, status = raw.get("Spec", {}), raw.get("Status", {})
    mgr = raw.get("ManagerStatus") or {}
    return SwarmNode(
        id=raw["ID"],
        hostname=raw.get("Description", {}).get("Hostname", ""),
        role=Role(spec.get("Role", "worker")),
        availability=Availability(spec.get("Availability", "active")),
        state=status.get("State", "unknown"),
        addr=status.get("Addr", ""),
        version=int(raw.get("Version", {}).get("Index", 0)),
        updated_at=_ts(raw.get("UpdatedAt", "")),
        reachability=mgr.get("Reachability", ""),
        leader=bool(mgr.get("Leader", False)),
        manager_addr=mgr.get("Addr", ""),
    )


def parse_info(info: Mapping[str, Any]) -> LocalSwarm:
    sw = info.get("Swarm") or {}
    state = sw.get("LocalNodeState") or "inactive"
    return LocalSwarm(
        state=LocalState(state),
        node_id=sw.get("NodeID", ""),
        node_addr=sw.get("NodeAddr", ""),
        cluster_id=(sw.get("Cluster") or {}).get("ID", ""),
        control_available=bool(sw.get("ControlAvailable", False)),
        remote_managers=tuple(sorted(m.get("Addr", "") for m in sw.get("RemoteManagers") or ())),
        error=sw.get("Error", ""),
    )


def manager_addresses(nodes: Iterable[SwarmNode]) -> list[str]:
    """``ip:2377`` of every reachable manager, leader first."""
    mgrs = [n for n in nodes if n.role is Role.MANAGER and n.reachability == "reachable"]
    mgrs.sort(key=lambda n: (not n.leader, n.manager_addr))
    return [n.manager_addr for n in mgrs if n.manager_addr]
