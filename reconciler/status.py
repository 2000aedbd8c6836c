"""What a node reports about itself in ``<prefix>/nodes/<node>/status``, and how it is read.

``NodeStatus.to_json`` is what the agent writes; ``from_json`` is what ``swarmkeeper status``,
the rollout gate and tests read. Reading is tolerant: unknown keys are ignored (a newer
agent may add fields), missing optional keys get defaults, and a value that is not our JSON
at all raises ``ValueError`` so callers can show it as unreadable rather than crash. Pure.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any


class NodeState(StrEnum):
    CONVERGED = "converged"  # the applied revision's plan is fully in place
    APPLYING = "applying"  # executing a plan right now (holds a rollout slot for a new rev)
    DEGRADED = "degraded"  # the last apply failed/rolled back, or a unit is not healthy
    PAUSED = "paused"  # an operator paused the node: it applies nothing
    REJECTED = "rejected"  # the desired revision is invalid/unsigned: kept the last good one
    IDLE = "idle"  # nothing published (nor a branch head read) and nothing applied yet


def utcnow() -> str:
    """ISO 8601 UTC with a ``Z``: the format of every timestamp we write."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, AttributeError):
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    node: str
    role: str  # "manager" | "worker" ("" before the node's role is known)
    state: NodeState
    revision: str = ""  # the commit whose plan is applied ("" nothing applied yet)
    desired: str = ""  # the desired revision the node last saw
    error: str = ""  # one line for a table; "" when fine
    problems: tuple[str, ...] = ()  # every ``path:line: message`` of a rejected revision
    units: Mapping[str, str] = field(default_factory=dict)  # unit -> ActiveState
    updated_at: str = ""  # ISO 8601 UTC, see utcnow()
    rollout: str = ""  # "" | "waiting" (for a slot) | "halted" (failed revision)
    agent: str = ""  # agent version
    progress: str = ""  # while applying: "3/8 restart web.service"
    # swarm membership (MembershipStatus.as_dict(): node_id, role, state, leader, managers
    # reachable, error); empty when the agent does not manage swarm membership
    swarm: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "state", NodeState(self.state))
        object.__setattr__(self, "units", MappingProxyType(dict(sorted(dict(self.units).items()))))
        object.__setattr__(self, "problems", tuple(self.problems))

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "role": self.role,
            "state": self.state.value,
            "revision": self.revision,
            "desired": self.desired,
            "error": self.error,
            "problems": list(self.problems),
            "units": dict(self.units),
            "updated_at": self.updated_at,
            "rollout": self.rollout,
            "agent": self.agent,
            **({"progress": self.progress} if self.progress else {}),
            **({"swarm": dict(self.swarm)} if self.swarm else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> NodeStatus:
        """Parse a status value; ``ValueError`` if it is not a status object at all."""
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("status is not a JSON object")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeStatus:
        node = data.get("node")
        if not isinstance(node, str) or not node:
            raise ValueError("status has no node name")
        try:
            state = NodeState(str(data.get("state", "")))
        except ValueError as e:
            raise ValueError(f"unknown node state {data.get('state')!r}") from e
        units = data.get("units") or {}
        if not isinstance(units, Mapping):
            units = {}
        problems = data.get("problems") or ()
        if not isinstance(problems, list | tuple):
            problems = (str(problems),)

        def s(k: str) -> str:
            v = data.get(k)
            return "" if v is None else str(v)

        return cls(
            node=node,
            role=s("role"),
            state=state,
            revision=s("revision"),
            desired=s("desired"),
            error=s("error"),
            problems=tuple(str(p) for p in problems),
            units={str(k): str(v) for k, v in units.items()},
            updated_at=s("updated_at"),
            rollout=s("rollout"),
            agent=s("agent"),
            progress=s("progress"),
            swarm=dict(data["swarm"]) if isinstance(data.get("swarm"), Mapping) else {},
        )

    def age(self, now: dt.datetime | None = None) -> float | None:
        """Seconds since ``updated_at`` (None if unknown)."""
        t = parse_time(self.updated_at)
        if t is None:
            return None
        return ((now or dt.datetime.now(dt.UTC)) - t).total_seconds()
