"""The planner: what to do to take a node from what it runs to its desired spec. Pure.

``plan(spec, observed, inventory)`` compares three things: the desired ``NodeSpec``, what the
node shows now (``Observed``: unit-file and file digests, systemd's unit states), and what
swarmkeeper last applied (``Inventory``: which units and files are ours and what content is
running). It returns a ``Plan``, a tuple of frozen actions in fixed phases::

    adopt → stop → write → daemon-reload → reload → restart → start → enable/disable →
    prune → verify

Rules: a new unit is written, started and enabled (when it has an [Install]
section and ``enable`` is not false); a changed unit is restarted, or reloaded
(``on_change: reload``), or left alone (``ignore``), as its kind allows
(``reconciler.plan.unittypes``); a changed managed file restarts (or reloads) exactly the
units that read it (``reconciler.plan.unitfile``); a removed unit is stopped (reverse role
order), disabled and deleted, or given back when it was adopted
(``reconciler.plan.records``); a hand-edited/deleted unit file or a unit stopped or failed
by hand is repaired and the action says ``drift``. Units and files not in the inventory are
never touched, except desired ones, which are adopted. When nothing differs the plan is
empty. The same ``Plan`` is printed by ``swarmkeeper plan`` and executed by
``reconciler.apply.engine``. The vocabulary (``Observed``, the actions, ``Gate``, ``Plan``,
``describe``) lives in ``reconciler.plan.actions`` and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from reconciler.models import NodeSpec, OnChange, UnitSpec
from reconciler.plan import records as planrecords
from reconciler.plan import unitfile, unittypes
from reconciler.plan.actions import (
    PHASES,
    Action,
    AdoptFile,
    AdoptUnit,
    DaemonReload,
    DeleteFile,
    DeleteUnit,
    DisableRemoved,
    DisableUnit,
    EnableUnit,
    FileState,
    Gate,
    MaskUnit,
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
from reconciler.plan.records import run_records
from reconciler.plan.units import (
    Draft,
    drift_reasons,
    removed,
    restart_for_dropins,
    socket_services,
)
from reconciler.plan.unittypes import RUNNING, Change, Kind, Ran, is_template

# The vocabulary is re-exported: callers use P.Plan, P.Gate, P.describe... (plan as P).
__all__ = [
    "PHASES",
    "RUNNING",
    "Action",
    "AdoptFile",
    "AdoptUnit",
    "DaemonReload",
    "DeleteFile",
    "DeleteUnit",
    "DisableRemoved",
    "DisableUnit",
    "EnableUnit",
    "FileState",
    "Gate",
    "MaskUnit",
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
    "kind",
    "plan",
    "run_records",
    "target",
    "to_json",
    "wants_enable",
]

# ---------------------------------------------------------------- the planner


def wants_enable(u: UnitSpec | AppliedUnit) -> bool:
    return u.enable is not False and unitfile.has_install(u.content)


def kind(name: str, st: UnitState, content: bytes | None = None) -> Kind:
    """The unit's row of ``unittypes.RULES``: systemd's Type= once loaded, else the file's."""
    stype, remain = st.service_type, st.remain_after_exit
    if not stype and content is not None and name.endswith(".service"):
        stype, remain = unitfile.service_type(content)
    return unittypes.kind_of(name, stype, remain)


def is_up(st: UnitState, ran: Ran = Ran.UNKNOWN, name: str = "x.service") -> bool:
    """Converged for its kind (see ``unittypes.is_up``); ``ran`` is the inventory's record."""
    return unittypes.is_up(
        kind(name, st),
        st.active_state,
        st.result,
        invocation_id=st.invocation_id,
        skipped=st.skipped,
        ran=ran,
    )


def plan(
    spec: NodeSpec,
    observed: Observed,
    inventory: Inventory | None = None,
    *,
    root: str = "",
    running_before: frozenset[str] = frozenset(),
) -> Plan:
    """The actions that converge the node on ``spec``; empty when nothing differs.

    ``root`` is the ``--root`` prefix of a sandbox: a unit there reads ``<root>/etc/x`` for
    the managed file ``/etc/x``, and both spellings count as a reference.
    ``running_before`` (a rollback): units that ran before the failed apply; each is
    started again if it does not run now, also one a socket or timer activates.
    """
    inv = inventory or EMPTY
    d = Draft()
    changed = _files(d, spec, observed, inv)
    # a service a desired timer/socket/path activates is started by that unit, not by us
    triggered = {t for u in spec.units if (t := unitfile.triggers(u.name, u.content))}
    desired = set(spec.unit_names)
    gone = [n for n in inv.managed_units() if n not in desired]
    # drop-ins first: what they change is a reason for their unit's restart
    removed(d, [n for n in gone if unitfile.dropin_parent(n)], observed, inv)
    for u in sorted(spec.units, key=lambda u: unitfile.dropin_parent(u.name) is None):
        _unit(d, u, observed, inv, changed, root.rstrip("/"), u.name in triggered)
    removed(d, [n for n in gone if not unitfile.dropin_parent(n)], observed, inv)
    for parent, (dropin, why) in d.dropins.items():  # units we do not ship (vendor units)
        restart_for_dropins(d, parent, dropin, why, observed)
    socket_services(d, spec, observed)
    for name in running_before:  # a rollback: what ran before the failed apply runs again
        if name in desired and name not in d.planned() and not is_template(name):
            st = observed.units.get(name, UnitState())
            if st.active_state not in RUNNING:
                entry = spec.unit(name)
                assert entry is not None
                d.add(StartUnit(name, "ran before the failed apply"))
                d.verify.append(Gate(name, entry.timeout, entry.settle))

    if (
        d.reload_due
        or any(isinstance(a, WriteUnit | DeleteUnit) for a in d.by_phase[Phase.WRITE])
        or any(isinstance(a, DisableRemoved) for a in d.by_phase[Phase.STOP])
    ):
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
    d: Draft, spec: NodeSpec, observed: Observed, inv: Inventory
) -> dict[str, tuple[str, bool]]:
    """Write/prune managed files; returns path -> (why, drift) for content that changed."""
    changed: dict[str, tuple[str, bool]] = {}
    managed = set(inv.managed_files())
    for f in spec.files:
        digest = f.digest  # a property that hashes: once per file
        obs = observed.files.get(f.path)
        app = inv.file(f.path)
        if obs is not None and f.path not in managed:
            d.add(planrecords.adopt_file(f.path, obs.digest, obs.mode))
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
            orig = inv.original_file(p)
            if orig is not None and orig.content is not None:
                changed[p] = ("given back", False)
                obs = observed.files.get(p)
                if obs is None or obs.digest != orig.digest or obs.mode != orig.mode:
                    why = f"no longer desired: give back the original ({orig.describe()})"
                    d.add(WriteFile(p, orig.content, orig.mode, why))
                continue
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
    ours: bool  # in the inventory, or being adopted by an unfinished apply
    vendor: str | None  # digest of the definition systemd loads from elsewhere (not ours)


def _unit(
    d: Draft,
    u: UnitSpec,
    observed: Observed,
    inv: Inventory,
    changed: Mapping[str, tuple[str, bool]],
    root: str,
    triggered: bool,
) -> None:
    """Adopt, write, (re)start or reload, and enable/disable one desired unit."""
    app = inv.unit(u.name)
    x = _Unit(u, u.digest, observed.unit_files.get(u.name), app,
              observed.units.get(u.name, UnitState()),
              app is not None or u.name in inv.managed_units(), observed.vendor.get(u.name))  # fmt: skip
    if not x.ours and (x.on_disk is not None or x.state.load_state != "not-found"):
        d.add(planrecords.adopt_unit(u.name, x.state, x.on_disk, x.vendor))
    file_reasons = _unit_file_reasons(x)
    if x.on_disk == x.digest and (
        x.state.need_daemon_reload or x.applied is None or x.applied.digest != x.digest
    ):
        d.maybe_unloaded = True  # possibly written by a killed run that never reloaded
    if x.on_disk != x.digest:
        why, drift = drift_reasons(file_reasons) if file_reasons else ("new unit", False)
        d.add(WriteUnit(u.name, u.content, why, drift))
    reasons = file_reasons + _changed_file_reasons(u, changed, root)
    parent = unitfile.dropin_parent(u.name)
    if parent is not None:
        _dropin_changed(d, x, parent, reasons, inv)
        return
    if u.name in d.dropins:
        reasons += d.dropins.pop(u.name)[1]
    k = kind(u.name, x.state, u.content)
    rule = unittypes.RULES[k]
    # A mask in the unit directory is the file we just replaced: the unit is ours to run.
    # One elsewhere (a runtime mask in /run) still wins over our file: the operator's call.
    masked = x.state.load_state == "masked" and (x.on_disk is None or x.on_disk == x.digest)
    if not rule.started or masked:
        return  # templates are instantiated by others
    ran = x.applied.ran if x.applied is not None else Ran.UNKNOWN
    st = x.state
    if unittypes.is_up(
        k, st.active_state, st.result, invocation_id=st.invocation_id, skipped=st.skipped, ran=ran
    ):
        if (
            rule.change is not Change.NOTHING
            and (action := _restart_or_reload(u, reasons)) is not None
        ):
            d.add(action)
            d.verify.append(Gate(u.name, u.timeout, u.settle))
    elif not triggered:
        d.add(StartUnit(u.name, *_start_reason(x, reasons)))
        d.verify.append(Gate(u.name, u.timeout, u.settle))
    if (enablement := _enablement(x)) is not None:
        d.add(enablement)


def _dropin_changed(d: Draft, x: _Unit, parent: str, reasons: Reasons, inv: Inventory) -> None:
    """A drop-in's changes are reasons for the unit it configures (restarted later)."""
    if not reasons and x.on_disk != x.digest:
        reasons = [("added", False)]
    elif not reasons and x.applied is None and inv.pending and x.spec.name in inv.pending.units:
        reasons = [("added", False)]  # written by a killed run: restart its unit
    for why, drift in reasons:
        d.dropin_changed(parent, x.spec, f"{x.spec.name} {why.removeprefix('drift: ')}", drift)


def _unit_file_reasons(x: _Unit) -> Reasons:
    """Why the unit file differs from what was applied, what is on disk, or what runs."""
    if x.applied is not None and x.applied.digest != x.digest:
        return [("unit changed", False)]
    if x.on_disk is None and x.applied is not None:
        return [("drift: unit file deleted by hand", True)]
    if x.on_disk is not None and x.on_disk != x.digest:
        return [
            ("drift: unit file edited by hand", True) if x.applied else ("unit file adopted", False)
        ]
    if x.on_disk is None and not x.ours and x.vendor is not None and x.vendor != x.digest:
        return [("overrides the vendor definition", False)]
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
    why, drift = drift_reasons(reasons)
    if u.on_change is OnChange.RELOAD and unitfile.can_reload(u.content):
        return ReloadUnit(u.name, why, drift)
    if u.on_change is OnChange.RELOAD:
        return RestartUnit(u.name, f"{why} (no ExecReload=: restart instead)", drift)
    return RestartUnit(u.name, why, drift)


def _start_reason(x: _Unit, reasons: Reasons) -> tuple[str, bool]:
    """Why a unit that is not up gets started, and whether that repairs drift."""
    if x.applied is None and x.on_disk is None and x.state.load_state == "not-found":
        return "new unit", False
    if reasons and not any(dr for _, dr in reasons):
        return drift_reasons(reasons)
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


def drift_count(p: Plan) -> int:
    return sum(1 for a in p if a.drift)
