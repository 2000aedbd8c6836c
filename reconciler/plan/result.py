"""What an apply did: the frozen result values ``apply.Engine.apply`` returns.

Pure values in the planning layer, so the pure core (the requeue policy), status writers,
notifications and the CLI can read results without loading the engine and its actuators.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from reconciler.models import Revision
from reconciler.plan import planner as P


class Outcome(StrEnum):
    CONVERGED = "converged"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"  # the rollback failed too (or systemd went away): the node needs a look


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: P.Action
    result: str  # created | updated | unchanged | removed | absent | done | healthy | <job result>
    seconds: float  # for actions run as one batch (writes, enable/disable): the batch's time

    def to_json(self) -> dict[str, object]:
        return {**P.to_json(self.action), "result": self.result, "seconds": round(self.seconds, 4)}


@dataclass(frozen=True, slots=True)
class Failure:
    unit: str
    state: str  # e.g. "failed (exit-code)"
    detail: str  # systemd's status text, plus journal lines when journald runs


@dataclass(frozen=True, slots=True)
class ApplyResult:
    outcome: Outcome
    revision: Revision  # the target
    applied: Revision | None  # what the node runs now
    actions: tuple[ActionResult, ...]
    rollback: tuple[ActionResult, ...] = ()
    failure: Failure | None = None
    error: str = ""
    duration: float = 0.0
    resumed: bool = False  # an interrupted apply was found and finished

    @property
    def changed(self) -> bool:
        return bool(self.actions)

    @property
    def drift(self) -> int:
        return sum(1 for r in self.actions if r.action.drift)

    def to_json(self) -> dict[str, object]:
        return {
            "outcome": str(self.outcome),
            "revision": self.revision,
            "applied": self.applied,
            "actions": [r.to_json() for r in self.actions],
            "rollback": [r.to_json() for r in self.rollback],
            "failure": None
            if self.failure is None
            else {
                "unit": self.failure.unit,
                "state": self.failure.state,
                "detail": self.failure.detail,
            },
            "error": self.error,
            "duration": round(self.duration, 4),
            "resumed": self.resumed,
            "drift": self.drift,
        }
