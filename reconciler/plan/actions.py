"""The planner's vocabulary: what the node shows, the actions of a plan, and their text. Pure.

``Observed`` (with ``UnitState`` and ``FileState``) is what the apply engine reads from the
node; the frozen action dataclasses, ``Gate`` and ``Plan`` are what ``reconciler.plan.planner``
returns, in the fixed ``Phase`` order. ``describe`` and ``to_json`` are how ``swarmkeeper
plan``, the apply result and pass events print an action. Kept apart from the planning
rules so both stay readable; ``reconciler.plan.planner`` re-exports every name here, and callers
keep using ``from reconciler import plan as P``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, NamedTuple

from reconciler.plan.applied import Original


class Phase(StrEnum):
    ADOPT = "adopt"
    STOP = "stop"
    WRITE = "write"
    DAEMON_RELOAD = "daemon-reload"
    RELOAD = "reload"
    RESTART = "restart"
    START = "start"
    ENABLE = "enable/disable"
    PRUNE = "prune"
    VERIFY = "verify"


PHASES: tuple[Phase, ...] = tuple(Phase)


# ---------------------------------------------------------------- what the node shows


@dataclass(frozen=True, slots=True)
class UnitState:
    """systemd's view of one unit (the fields of the actuator's UnitStatus the planner uses)."""

    load_state: str = "not-found"
    active_state: str = "inactive"
    sub_state: str = "dead"
    unit_file_state: str = ""
    invocation_id: str = ""
    result: str = "success"
    service_type: str = ""
    remain_after_exit: bool = False
    # The file on disk differs from what systemd loaded. It only decides whether the plan
    # gets a daemon-reload, so a plan that has one anyway does not depend on it (the engine
    # skips it when a unit file is to be written; a property test holds the planner to that).
    need_daemon_reload: bool = False
    # Its last start was skipped: a Condition*= was false (seen by this connection; the
    # inventory remembers it for the next process).
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class FileState:
    digest: str
    mode: int


@dataclass(frozen=True, slots=True)
class Observed:
    """The node now: only names/paths that are desired or managed need to be present."""

    unit_files: Mapping[str, str] = field(default_factory=dict)  # name -> sha256 in unit dir
    files: Mapping[str, FileState] = field(default_factory=dict)  # path -> digest and mode
    units: Mapping[str, UnitState] = field(default_factory=dict)
    # Units not yet ours that systemd loads from another unit directory (a vendor unit):
    # name -> sha256 of that definition ("" when it cannot be read). Only adoption needs it.
    vendor: Mapping[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class AdoptUnit:
    """Take over a unit that exists unmanaged; ``original`` is what it is now (the engine
    adds the file's content), recorded before anything is touched and given back by a
    rollback or a later prune."""

    PHASE: ClassVar[Phase] = Phase.ADOPT
    VERB: ClassVar[str] = "adopt"
    unit: str
    original: Original
    reason: str
    drift: bool = False


@dataclass(frozen=True, slots=True)
class AdoptFile:
    PHASE: ClassVar[Phase] = Phase.ADOPT
    VERB: ClassVar[str] = "adopt"
    path: str
    original: Original
    reason: str
    drift: bool = False


@dataclass(frozen=True, slots=True)
class StopUnit:
    PHASE: ClassVar[Phase] = Phase.STOP
    VERB: ClassVar[str] = "stop"
    unit: str
    reason: str
    drift: bool = False
    reset_failed: bool = False  # a failed unit stays loaded until its failure is reset
    # Stop only this unit (systemd: ignore-dependencies): what requires it keeps running.
    # For a unit given back as not running, and a service stopped for its socket's restart.
    alone: bool = False


@dataclass(frozen=True, slots=True)
class WriteFile:
    PHASE: ClassVar[Phase] = Phase.WRITE
    VERB: ClassVar[str] = "write"
    path: str
    content: bytes = field(repr=False)
    mode: int
    reason: str
    drift: bool = False


@dataclass(frozen=True, slots=True)
class WriteUnit:
    PHASE: ClassVar[Phase] = Phase.WRITE
    VERB: ClassVar[str] = "write"
    unit: str
    content: bytes = field(repr=False)
    reason: str
    drift: bool = False


@dataclass(frozen=True, slots=True)
class DaemonReload:
    PHASE: ClassVar[Phase] = Phase.DAEMON_RELOAD
    VERB: ClassVar[str] = "daemon-reload"
    reason: str
    drift: bool = False


@dataclass(frozen=True, slots=True)
class UnitAction:
    """What the verbs below share: one unit, why, and whether it repairs drift. Each verb
    is its own class (``Plan`` is matched on them); equality includes the class."""

    unit: str
    reason: str
    drift: bool = False


@dataclass(frozen=True, slots=True)
class ReloadUnit(UnitAction):
    PHASE: ClassVar[Phase] = Phase.RELOAD
    VERB: ClassVar[str] = "reload"


@dataclass(frozen=True, slots=True)
class RestartUnit(UnitAction):
    PHASE: ClassVar[Phase] = Phase.RESTART
    VERB: ClassVar[str] = "restart"


@dataclass(frozen=True, slots=True)
class StartUnit(UnitAction):
    PHASE: ClassVar[Phase] = Phase.START
    VERB: ClassVar[str] = "start"


@dataclass(frozen=True, slots=True)
class EnableUnit(UnitAction):
    PHASE: ClassVar[Phase] = Phase.ENABLE
    VERB: ClassVar[str] = "enable"


@dataclass(frozen=True, slots=True)
class DisableUnit(UnitAction):
    PHASE: ClassVar[Phase] = Phase.ENABLE
    VERB: ClassVar[str] = "disable"


@dataclass(frozen=True, slots=True)
class MaskUnit(UnitAction):
    """Mask a unit (a link to /dev/null in the unit directory): giving back a mask."""

    PHASE: ClassVar[Phase] = Phase.ENABLE
    VERB: ClassVar[str] = "mask"


@dataclass(frozen=True, slots=True)
class DisableRemoved(DisableUnit):
    """Disable a unit that goes away, while its file still exists (systemd needs it)."""

    PHASE: ClassVar[Phase] = Phase.STOP


@dataclass(frozen=True, slots=True)
class DeleteUnit(UnitAction):
    """Remove a unit file; in the write phase, so the one daemon-reload after it covers it."""

    PHASE: ClassVar[Phase] = Phase.WRITE
    VERB: ClassVar[str] = "delete"


@dataclass(frozen=True, slots=True)
class DeleteFile:
    PHASE: ClassVar[Phase] = Phase.PRUNE
    VERB: ClassVar[str] = "delete"
    path: str
    reason: str
    drift: bool = False


class Gate(NamedTuple):
    """One unit the health gate waits for: its ``timeout`` and ``settle`` (None: default)."""

    unit: str
    timeout: float
    settle: float | None = None


@dataclass(frozen=True, slots=True)
class Verify:
    """The health gate: each unit must become healthy within its timeout."""

    PHASE: ClassVar[Phase] = Phase.VERIFY
    VERB: ClassVar[str] = "verify"
    units: tuple[Gate, ...]
    reason: str
    drift: bool = False


Action = (
    AdoptUnit
    | AdoptFile
    | StopUnit
    | WriteFile
    | WriteUnit
    | DaemonReload
    | ReloadUnit
    | RestartUnit
    | StartUnit
    | EnableUnit
    | DisableUnit
    | MaskUnit
    | DeleteUnit
    | DeleteFile
    | Verify
)
Plan = tuple[Action, ...]


def target(a: Action) -> str:
    if isinstance(a, WriteFile | DeleteFile | AdoptFile):
        return a.path
    if isinstance(a, DaemonReload):
        return ""
    if isinstance(a, Verify):
        return " ".join(g.unit for g in a.units)
    return a.unit


def describe(a: Action) -> str:
    """One line, e.g. ``restart etcd-member.service: /etc/swarmkeeper/node.env changed``."""
    t = target(a)
    return f"{a.VERB} {t}: {a.reason}" if t else f"{a.VERB}: {a.reason}"


def to_json(a: Action) -> dict[str, object]:
    out: dict[str, object] = {
        "phase": str(a.PHASE),
        "action": a.VERB,
        "target": target(a),
        "reason": a.reason,
        "drift": a.drift,
    }
    if isinstance(a, WriteFile):
        out["mode"] = f"{a.mode:04o}"
    if isinstance(a, Verify):
        out["units"] = [{"unit": g.unit, "timeout": g.timeout, "settle": g.settle} for g in a.units]
    return out
