"""The planner's rules that reach past one desired unit. Pure.

``Draft`` is the plan under construction (actions per phase, the gate's units, what a
unit's drop-ins changed). The rules here act on units the role's entry for a unit does not
decide alone: a unit no longer desired (stopped, disabled, deleted, or given back when it was
adopted), the unit a drop-in configures (restarted when a drop-in of it changes), and the
service of a socket that restarts (stopped before, started after: systemd refuses to start
a socket whose service runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.models import NodeSpec, OnChange, UnitName, UnitSpec
from reconciler.plan import records as planrecords
from reconciler.plan import unitfile
from reconciler.plan.actions import (
    PHASES,
    Action,
    DeleteUnit,
    DisableRemoved,
    Gate,
    Observed,
    Phase,
    ReloadUnit,
    RestartUnit,
    StartUnit,
    StopUnit,
    UnitState,
)
from reconciler.plan.applied import AppliedUnit, Inventory
from reconciler.plan.unittypes import RUNNING, Ran, is_template


def drift_reasons(reasons: list[tuple[str, bool]]) -> tuple[str, bool]:
    return "; ".join(r for r, _ in reasons), any(d for _, d in reasons)


@dataclass(slots=True)
class Draft:
    """The plan under construction: actions per phase plus what the last phases need."""

    by_phase: dict[Phase, list[Action]] = field(default_factory=lambda: {p: [] for p in PHASES})
    verify: list[Gate] = field(default_factory=list)
    reload_due: bool = False  # a drop-in was written
    maybe_unloaded: bool = False  # a unit file may be on disk but not loaded (killed run)
    # unit -> (the drop-in entry that decides on_change and the gate, why): drop-ins of
    # the unit that changed, were added or removed
    dropins: dict[str, tuple[UnitSpec | AppliedUnit, list[tuple[str, bool]]]] = field(
        default_factory=dict
    )

    def dropin_changed(
        self, parent: str, entry: UnitSpec | AppliedUnit, why: str, drift: bool
    ) -> None:
        self.dropins.setdefault(parent, (entry, []))[1].append((why, drift))

    def add(self, a: Action) -> None:
        self.by_phase[a.PHASE].append(a)

    def planned(self) -> set[str]:
        """Units already restarted, reloaded or started by the plan."""
        return {
            a.unit for p in (Phase.RELOAD, Phase.RESTART, Phase.START) for a in self.by_phase[p]
            if isinstance(a, ReloadUnit | RestartUnit | StartUnit)
        }  # fmt: skip


def removed(d: Draft, names: list[UnitName], observed: Observed, inv: Inventory) -> None:
    """Stop (reverse role order), disable and delete units no longer desired; a unit that
    existed before we adopted it is given back instead (``planrecords.give_back``)."""
    stops: list[Action] = []
    disables: list[Action] = []
    for name in reversed(names):
        st = observed.units.get(name, UnitState())
        orig = inv.original_unit(name)
        parent = unitfile.dropin_parent(name)
        entry = inv.unit(name)
        if parent is not None and entry is not None:
            d.dropin_changed(parent, entry, f"{name} removed", False)
        if orig is not None:
            app = inv.unit(name)
            for a in planrecords.give_back(
                name, orig, st, observed.unit_files.get(name), app.ran if app else Ran.UNKNOWN
            ):
                if isinstance(a, Gate):
                    d.verify.append(a)
                else:
                    d.add(a)
            continue
        if st.active_state in RUNNING or st.active_state == "failed":
            stops.append(
                StopUnit(name, "no longer desired", reset_failed=st.active_state == "failed")
            )
        if st.unit_file_state in ("enabled", "enabled-runtime"):
            disables.append(DisableRemoved(name, "no longer desired"))
        if name in observed.unit_files:
            d.add(DeleteUnit(name, "no longer desired"))
        elif st.need_daemon_reload:
            d.reload_due = True  # deleted by an apply killed before its daemon-reload
    d.by_phase[Phase.STOP] += stops + disables


def restart_for_dropins(
    d: Draft,
    unit: str,
    entry: UnitSpec | AppliedUnit,
    reasons: list[tuple[str, bool]],
    observed: Observed,
) -> None:
    """Restart (or reload) a unit we do not ship whose drop-ins changed, if it runs."""
    st = observed.units.get(unit, UnitState())
    if entry.on_change is OnChange.IGNORE or st.active_state not in RUNNING:
        return  # a unit that does not run picks its drop-ins up when it starts
    why, drift = drift_reasons(reasons)
    verb = ReloadUnit if entry.on_change is OnChange.RELOAD else RestartUnit
    d.add(verb(unit, why, drift))
    d.verify.append(Gate(unit, entry.timeout, entry.settle))


def socket_services(d: Draft, spec: NodeSpec, observed: Observed) -> None:
    """Sockets (re)start first in their phase, and the running service of a socket that
    starts or restarts is stopped before and started after it.

    systemd refuses to start a socket whose service is active ("already active,
    refusing"), and a service that requires its socket is stopped with it; either way
    the service would not run afterwards, and a socket-activated one is not started by
    the planner otherwise. A socket that is not desired (given back) activates its
    same-named service.
    """
    for p in (Phase.RESTART, Phase.START):  # as at boot: sockets before what they serve
        d.by_phase[p].sort(key=lambda a: not getattr(a, "unit", "").endswith(".socket"))
    sockets = [
        a.unit
        for p in (Phase.RESTART, Phase.START)
        for a in d.by_phase[p]
        if isinstance(a, RestartUnit | StartUnit) and a.unit.endswith(".socket")
    ]
    for sock in sockets:
        u = spec.unit(sock)
        svc = unitfile.triggers(sock, u.content if u else b"")
        st = observed.units.get(svc or "", UnitState())
        if svc is None or is_template(svc) or st.active_state not in RUNNING:
            continue
        why = f"{sock} starts: its service must not run meanwhile"
        for p in (Phase.RELOAD, Phase.RESTART, Phase.START):
            d.by_phase[p] = [a for a in d.by_phase[p] if getattr(a, "unit", None) != svc]
        d.by_phase[Phase.STOP] = [
            a for a in d.by_phase[Phase.STOP] if getattr(a, "unit", None) != svc
        ]
        d.add(StopUnit(svc, why, alone=True))
        d.add(StartUnit(svc, f"{sock} started"))
        entry = spec.unit(svc)
        if all(g.unit != svc for g in d.verify):
            d.verify.append(Gate(svc, *((entry.timeout, entry.settle) if entry else (30.0,))))
