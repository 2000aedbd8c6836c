"""The planner: what to do to take a node from what it runs to its desired spec. Pure.

``plan(spec, observed, inventory)`` compares three things: the desired ``NodeSpec``, what the
node shows now (``Observed``: unit-file and file digests, systemd's unit states), and what
swarmkeeper last applied (``Inventory``: which units and files are ours and what content is
running). It returns a ``Plan``, a tuple of frozen actions in fixed phases::

    stop → write → daemon-reload → reload → restart → start → enable/disable → prune → verify

Rules: a new unit is written, started and enabled (when it has an [Install]
section and ``enable`` is not false); a changed unit is restarted, or reloaded
(``on_change: reload``), or left alone (``ignore``); a changed managed file restarts (or
reloads) exactly the units that read it (``reconciler.plan.unitfile``); a removed unit is stopped
(reverse role order), disabled and deleted; a hand-edited/deleted unit file or a unit
stopped or failed by hand is repaired and the action says ``drift``. Units and files not in
the inventory are never touched, except a desired one, which is written and so adopted.
When nothing differs the plan is empty. The same ``Plan`` is printed by ``swarmkeeper plan``
and executed by ``reconciler.apply.engine``. The vocabulary (``Observed``, the actions, ``Gate``,
``Plan``, ``describe``) lives in ``reconciler.plan.actions`` and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from reconciler.models import NodeSpec, OnChange, UnitName, UnitSpec
from reconciler.plan import unitfile
from reconciler.plan.actions import (
    PHASES,
    Action,
    DaemonReload,
    DeleteFile,
    DeleteUnit,
    DisableUnit,
    EnableUnit,
    FileState,
    Gate,
    Observed,
    Phase,
    Plan,
    ReloadUnit,
    RestartUnit,
    StartUnit,
    StopUnit,
    UnitState,
    Verify,
    WriteFile,
    WriteUnit,
    describe,
    target,
    to_json,
)
from reconciler.plan.applied import EMPTY, AppliedUnit, Inventory

# The vocabulary is re-exported: callers use P.Plan, P.Gate, P.describe... (plan as P).
__all__ = [
    "PHASES",
    "RUNNING",
    "Action",
    "DaemonReload",
    "DeleteFile",
    "DeleteUnit",
    "DisableUnit",
    "EnableUnit",
    "FileState",
    "Gate",
    "Observed",
    "Phase",
    "Plan",
    "ReloadUnit",
    "RestartUnit",
    "StartUnit",
    "StopUnit",
    "UnitState",
    "Verify",
    "WriteFile",
    "WriteUnit",
    "describe",
    "drift_count",
    "is_template",
    "is_up",
    "plan",
    "target",
    "to_json",
    "wants_enable",
]

RUNNING = frozenset({"active", "activating", "reloading"})


# ---------------------------------------------------------------- the planner


def is_template(name: str) -> bool:
    return name.partition(".")[0].endswith("@")


def wants_enable(u: UnitSpec | AppliedUnit) -> bool:
    return u.enable is not False and unitfile.has_install(u.content)


def is_up(st: UnitState) -> bool:
    """Running, or a plain oneshot that already ran to success (its converged state)."""
    if st.active_state in RUNNING:
        return True
    return (
        st.service_type == "oneshot"
        and not st.remain_after_exit
        and st.active_state == "inactive"
        and st.result == "success"
        and bool(st.invocation_id)
    )


def _drift(reasons: list[tuple[str, bool]]) -> tuple[str, bool]:
    return "; ".join(r for r, _ in reasons), any(d for _, d in reasons)


@dataclass(slots=True)
class _Draft:
    """The plan under construction: actions per phase plus what the last phases need."""

    by_phase: dict[Phase, list[Action]] = field(default_factory=lambda: {p: [] for p in PHASES})
    verify: list[Gate] = field(default_factory=list)
    reload_due: bool = False  # a drop-in was written
    maybe_unloaded: bool = False  # a unit file may be on disk but not loaded (killed run)

    def add(self, a: Action) -> None:
        self.by_phase[a.PHASE].append(a)


def plan(
    spec: NodeSpec, observed: Observed, inventory: Inventory | None = None, *, root: str = ""
) -> Plan:
    """The actions that converge the node on ``spec``; empty when nothing differs.

    ``root`` is the ``--root`` prefix of a sandbox: a unit there reads ``<root>/etc/x`` for
    the managed file ``/etc/x``, and both spellings count as a reference.
    """
    inv = inventory or EMPTY
    d = _Draft()
    changed = _files(d, spec, observed, inv)
    # a service a desired timer/socket/path activates is started by that unit, not by us
    triggered = {t for u in spec.units if (t := unitfile.triggers(u.name, u.content))}
    for u in spec.units:
        _unit(d, u, observed, inv, changed, root.rstrip("/"), u.name in triggered)
    desired = set(spec.unit_names)
    _removed(d, [n for n in inv.managed_units() if n not in desired], observed)

    if any(isinstance(a, WriteUnit) for a in d.by_phase[Phase.WRITE]) or d.reload_due:
        d.add(DaemonReload("unit files changed"))
    elif d.maybe_unloaded and (
        inv.pending is not None
        or any(observed.units.get(u.name, UnitState()).need_daemon_reload for u in spec.units)
    ):
        # A killed apply may have written unit files without reloading: reload to be sure.
        d.add(DaemonReload("unit files on disk are newer than what systemd loaded"))
    if d.verify:
        d.add(Verify(tuple(d.verify), "health gate for started and restarted units"))
    return tuple(a for p in PHASES for a in d.by_phase[p])


def _files(
    d: _Draft, spec: NodeSpec, observed: Observed, inv: Inventory
) -> dict[str, tuple[str, bool]]:
    """Write/prune managed files; returns path -> (why, drift) for content that changed."""
    changed: dict[str, tuple[str, bool]] = {}
    for f in spec.files:
        digest = f.digest  # a property that hashes: once per file
        obs = observed.files.get(f.path)
        app = inv.file(f.path)
        if app is not None and app.digest != digest:
            why, drift = "changed", False
        elif obs is None:
            why, drift = ("deleted by hand", True) if app else ("created", False)
        elif obs.digest != digest:
            why, drift = ("edited by hand", True) if app else ("replaced (adopted)", False)
        elif obs.mode != f.mode:
            why, drift = (f"mode {obs.mode:04o} -> {f.mode:04o}", app is not None)
        elif app is None and inv.pending is not None and f.path in inv.pending.files:
            # new, and already in place: an apply killed after writing it may not have
            # restarted (or daemon-reloaded for) the units that read it
            why, drift = "created", False
            d.maybe_unloaded = d.maybe_unloaded or unitfile.dropin_unit(f.path) is not None
        else:
            continue
        if obs is None or obs.digest != digest or obs.mode != f.mode:
            d.add(WriteFile(f.path, f.content, f.mode, ("drift: " if drift else "") + why, drift))
            d.reload_due = d.reload_due or unitfile.dropin_unit(f.path) is not None
        if not why.startswith("mode"):
            changed[f.path] = (why, drift)
    desired = {f.path for f in spec.files}
    for p in inv.managed_files():
        if p not in desired:
            changed[p] = ("removed", False)
            if p in observed.files:
                d.add(DeleteFile(p, "no longer desired"))
    return changed


Reasons = list[tuple[str, bool]]  # (why, drift) of each change that touches a unit


@dataclass(frozen=True, slots=True)
class _Unit:
    """One desired unit with what the disk, systemd and the inventory say about it."""

    spec: UnitSpec
    digest: str  # of the desired content (hashed once)
    on_disk: str | None  # digest of the unit file on disk
    applied: AppliedUnit | None
    state: UnitState


def _unit(
    d: _Draft,
    u: UnitSpec,
    observed: Observed,
    inv: Inventory,
    changed: Mapping[str, tuple[str, bool]],
    root: str,
    triggered: bool,
) -> None:
    """Write, (re)start or reload, and enable/disable one desired unit."""
    x = _Unit(u, u.digest, observed.unit_files.get(u.name), inv.unit(u.name),
              observed.units.get(u.name, UnitState()))  # fmt: skip
    file_reasons = _unit_file_reasons(x)
    if x.on_disk == x.digest and (
        x.state.need_daemon_reload or x.applied is None or x.applied.digest != x.digest
    ):
        d.maybe_unloaded = True  # possibly written by a killed run that never reloaded
    if x.on_disk != x.digest:
        why, drift = _drift(file_reasons) if file_reasons else ("new unit", False)
        d.add(WriteUnit(u.name, u.content, why, drift))
    reasons = file_reasons + _changed_file_reasons(u, changed, root)
    if is_template(u.name) or x.state.load_state == "masked":
        return  # templates are instantiated by others; a masked unit is the operator's call
    if is_up(x.state):
        if (action := _restart_or_reload(u, reasons)) is not None:
            d.add(action)
            d.verify.append(Gate(u.name, u.timeout, u.settle))
    elif not triggered:
        d.add(StartUnit(u.name, *_start_reason(x, reasons)))
        d.verify.append(Gate(u.name, u.timeout, u.settle))
    if (enablement := _enablement(x)) is not None:
        d.add(enablement)


def _unit_file_reasons(x: _Unit) -> Reasons:
    """Why the unit file differs from what was applied or what is on disk."""
    if x.applied is not None and x.applied.digest != x.digest:
        return [("unit changed", False)]
    if x.on_disk is None and x.applied is not None:
        return [("drift: unit file deleted by hand", True)]
    if x.on_disk is not None and x.on_disk != x.digest:
        return [
            ("drift: unit file edited by hand", True) if x.applied else ("unit file adopted", False)
        ]
    return []


def _changed_file_reasons(
    u: UnitSpec, changed: Mapping[str, tuple[str, bool]], root: str
) -> Reasons:
    """The changed managed files this unit reads (by path, or as its drop-in)."""
    refs = unitfile.referenced_paths(u.content) if changed else frozenset()
    if root and refs:
        refs |= {r[len(root) :] for r in refs if r.startswith(root + "/")}
    return [
        (f"{path} {changed[path][0]}", changed[path][1])
        for path in sorted(changed)
        if path in refs or unitfile.dropin_unit(path) == u.name
    ]


def _restart_or_reload(u: UnitSpec, reasons: Reasons) -> Action | None:
    """What a running unit needs for its changes: its ``on_change``, or nothing."""
    if not reasons or u.on_change is OnChange.IGNORE:
        return None
    why, drift = _drift(reasons)
    if u.on_change is OnChange.RELOAD and unitfile.can_reload(u.content):
        return ReloadUnit(u.name, why, drift)
    if u.on_change is OnChange.RELOAD:
        return RestartUnit(u.name, f"{why} (no ExecReload=: restart instead)", drift)
    return RestartUnit(u.name, why, drift)


def _start_reason(x: _Unit, reasons: Reasons) -> tuple[str, bool]:
    """Why a unit that is not up gets started, and whether that repairs drift."""
    if x.applied is None and x.on_disk is None:
        return "new unit", False
    if reasons and not any(dr for _, dr in reasons):
        return _drift(reasons)
    if x.applied is None:
        return "not running", False
    if x.state.active_state == "failed":
        return "drift: unit failed", True
    return "drift: stopped by hand", True


def _enablement(x: _Unit) -> Action | None:
    """Enable a unit that wants it, disable one that does not (or whose symlinks were ours)."""
    u, app = x.spec, x.applied
    enabled = x.state.unit_file_state in ("enabled", "enabled-runtime")
    if wants_enable(u) and not enabled:
        drift = app is not None and wants_enable(app)
        why = "has an [Install] section"
        if drift:
            deleted = x.on_disk is None
            why = "drift: unit file deleted by hand" if deleted else "drift: disabled by hand"
        return EnableUnit(u.name, why, drift)
    if not wants_enable(u) and (
        enabled or (x.on_disk is None and app is not None and wants_enable(app))
    ):  # a deleted file hides the state; its symlinks were ours
        why = "enable: false" if u.enable is False else "no [Install] section"
        return DisableUnit(u.name, why, app is not None and not wants_enable(app))
    return None


def _removed(d: _Draft, names: list[UnitName], observed: Observed) -> None:
    """Stop (reverse role order), disable and delete units no longer desired."""
    for name in reversed(names):
        st = observed.units.get(name, UnitState())
        if st.active_state in RUNNING or st.active_state == "failed":
            d.add(StopUnit(name, "no longer desired", reset_failed=st.active_state == "failed"))
        if st.unit_file_state in ("enabled", "enabled-runtime"):
            d.add(DisableUnit(name, "no longer desired"))
        if name in observed.unit_files:
            d.add(DeleteUnit(name, "no longer desired"))


def drift_count(p: Plan) -> int:
    return sum(1 for a in p if a.drift)
