"""What operators hear about: an ``Event`` of some ``EventKind`` at some ``Severity``. Pure values.

Emitters (the agent's pass, the swarm link, the service registrar) build events;
``coalesce`` folds identical ones and the hub (``hub.py``) delivers them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    """How much an operator should care; ordered debug < info < warning < error."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _RANK[self.value]

    @classmethod
    def parse(cls, text: str) -> Severity:
        return cls(text.strip().lower())

    def __lt__(self, other: str) -> bool:
        return self.rank < Severity(other).rank

    def __le__(self, other: str) -> bool:
        return self.rank <= Severity(other).rank

    def __gt__(self, other: str) -> bool:
        return self.rank > Severity(other).rank

    def __ge__(self, other: str) -> bool:
        return self.rank >= Severity(other).rank


_RANK = {"debug": 0, "info": 1, "warning": 2, "error": 3}


class EventKind(StrEnum):
    AGENT_STARTED = "agent_started"
    AGENT_STOPPED = "agent_stopped"
    SWARM_JOINED = "swarm_joined"
    SWARM_LEFT = "swarm_left"
    REVISION_APPLIED = "revision_applied"
    DRIFT_REPAIRED = "drift_repaired"
    APPLY_ROLLED_BACK = "apply_rolled_back"
    REVISION_REJECTED = "revision_rejected"
    ROLLOUT_HALTED = "rollout_halted"
    SERVICE_UNHEALTHY = "service_unhealthy"
    SERVICE_HEALTHY = "service_healthy"


# What an event means to an operator when the emitter does not say otherwise.
DEFAULT_SEVERITY: Mapping[EventKind, Severity] = {
    EventKind.AGENT_STARTED: Severity.INFO,
    EventKind.AGENT_STOPPED: Severity.WARNING,
    EventKind.SWARM_JOINED: Severity.INFO,
    EventKind.SWARM_LEFT: Severity.WARNING,
    EventKind.REVISION_APPLIED: Severity.INFO,
    EventKind.DRIFT_REPAIRED: Severity.WARNING,
    EventKind.APPLY_ROLLED_BACK: Severity.ERROR,
    EventKind.REVISION_REJECTED: Severity.ERROR,
    EventKind.ROLLOUT_HALTED: Severity.ERROR,
    EventKind.SERVICE_UNHEALTHY: Severity.ERROR,
    EventKind.SERVICE_HEALTHY: Severity.INFO,
}


@dataclass(frozen=True, slots=True)
class Event:
    """Something an operator may want to hear about. ``details`` must be JSON-serialisable."""

    kind: EventKind
    severity: Severity
    node: str
    revision: str = ""
    unit: str = ""
    message: str = ""
    details: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    at: float = field(default_factory=time.time, compare=False)  # unix time it happened

    @classmethod
    def of(
        cls,
        kind: EventKind,
        node: str,
        *,
        revision: str = "",
        unit: str = "",
        message: str = "",
        details: Mapping[str, Any] | None = None,
        severity: Severity | None = None,
        at: float | None = None,
    ) -> Event:
        """An event with the kind's default severity unless one is given."""
        return cls(
            at=time.time() if at is None else at,
            kind=kind,
            severity=severity or DEFAULT_SEVERITY[kind],
            node=node,
            revision=revision,
            unit=unit,
            message=message,
            details=dict(details or {}),
        )

    @property
    def key(self) -> tuple[str, str, str, str]:
        """Events with the same key are 'identical' and get coalesced."""
        return (self.kind, self.node, self.unit, self.revision)
