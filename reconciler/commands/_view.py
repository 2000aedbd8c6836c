"""What a node's row means, decided from what etcd holds: the truth ``status`` and ``wait`` show.

An agent reports its own state; the reader knows more (whether the heartbeat lease is still
alive, which revision is desired now), so the state shown is derived here, purely:

========== ==============================================================================
dead       the heartbeat lease is gone: whatever it last reported is not current
idle       nothing is published and nothing applied: there is nothing to converge on
converged  runs the desired revision, its pass is done and no unit of it has failed
behind     reports done, but on another revision (waiting for a slot, or a halted rollout)
applying   applying a plan now (``progress`` says how far)
degraded   the last apply failed or rolled back, or one of its units failed
rejected   the desired revision is invalid or unsigned: runs its last good one
paused     an operator paused it
unknown    an alive key without a readable status
========== ==============================================================================

``all_converged`` is what ``status`` exits 0 on: at least one node, and every node
``converged`` (on the published revision, or with nothing published on the branch head
each agent follows).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from enum import StrEnum
from typing import Any


class Shown(StrEnum):
    DEAD = "dead"
    IDLE = "idle"
    CONVERGED = "converged"
    BEHIND = "behind"
    APPLYING = "applying"
    DEGRADED = "degraded"
    REJECTED = "rejected"
    PAUSED = "paused"
    UNKNOWN = "unknown"


# the order counts are printed in: good news first
ORDER = (Shown.CONVERGED, Shown.BEHIND, Shown.APPLYING, Shown.IDLE, Shown.PAUSED,
         Shown.DEGRADED, Shown.REJECTED, Shown.DEAD, Shown.UNKNOWN)  # fmt: skip


def shown_state(row: Mapping[str, Any], desired: str) -> Shown:
    """Pure: the state to show for one status row (see the module table)."""
    reported = str(row.get("reported") or row.get("state") or "unknown")
    if not row.get("alive"):
        return Shown.DEAD
    if reported in ("applying", "degraded", "rejected", "paused", "unknown"):
        return Shown(reported)
    revision = str(row.get("revision") or "")
    target = desired or str(row.get("desired") or "")  # nothing published: its branch head
    if reported == "idle" or not revision:
        return Shown.IDLE if not target else Shown.BEHIND
    if reported != "converged":
        return Shown.UNKNOWN
    units = row.get("units") or {}
    if any(v == "failed" for v in units.values()):
        return Shown.DEGRADED
    return Shown.CONVERGED if revision == target else Shown.BEHIND


def counts(states: Iterable[Shown]) -> dict[str, int]:
    c = Counter(states)
    return {s.value: c[s] for s in ORDER if c[s]}


def all_converged(states: list[Shown]) -> bool:
    return bool(states) and all(s is Shown.CONVERGED for s in states)


def failure_is_current(failed: Any, desired: str) -> bool:
    """A ``rollout/failed`` marker matters only while the revision it names is desired."""
    return isinstance(failed, Mapping) and bool(desired) and failed.get("revision") == desired


def count_line(desired: str, states: list[Shown]) -> str:
    """``2 converged, 1 behind, 1 dead  (2/4 on the desired revision)``."""
    if not states:
        return ""
    per = ", ".join(f"{n} {s}" for s, n in counts(states).items())
    on = sum(1 for s in states if s is Shown.CONVERGED)
    if not desired:
        return f"{per}  (no revision published)"
    return f"{per}  ({on}/{len(states)} converged on the desired revision)"
