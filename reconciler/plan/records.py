"""What the plan records and gives back: adoption, giving back, run records. Pure.

A desired unit or file that already exists unmanaged (someone's file in the unit directory,
a vendor unit systemd loads from another directory, a file placed by hand) is *adopted*:
the plan starts with an ``adopt`` action saying what it was, and the engine records that
(``applied.Original``, with the file's content) in the pending marker before touching
anything; a converged apply keeps it in the inventory for as long as the name is managed.

When the name stops being desired (a rollback of the apply that adopted it, or a prune
later) it is *given back* instead of deleted: its content or the vendor definition again
(our copy removed), and the unit's running and enabled state as they were. A unit whose
definition we changed is restarted back to the original; one that did not run is stopped.

``run_records`` is what a converged apply's inventory says of each unit's start (``Ran``):
the record a later process needs to tell a collected oneshot or a condition-skipped unit
from one stopped by hand.
"""

from __future__ import annotations

from reconciler.models import NodeSpec
from reconciler.plan import unitfile, unittypes
from reconciler.plan.actions import (
    Action,
    AdoptFile,
    AdoptUnit,
    DeleteUnit,
    DisableUnit,
    EnableUnit,
    Gate,
    MaskUnit,
    Observed,
    RestartUnit,
    StartUnit,
    StopUnit,
    UnitState,
    WriteUnit,
)
from reconciler.plan.applied import Inventory, Original
from reconciler.plan.unittypes import RUNNING, Change, Ran, is_template

ENABLED = ("enabled", "enabled-runtime")
GIVE_BACK_TIMEOUT = 30.0  # the gate for a unit given back: its own entry is gone


def _up(name: str, st: UnitState, ran: Ran = Ran.UNKNOWN) -> bool:
    k = unittypes.kind_of(name, st.service_type, st.remain_after_exit)
    return unittypes.is_up(
        k, st.active_state, st.result, invocation_id=st.invocation_id, skipped=st.skipped, ran=ran
    )


def adopt_unit(name: str, st: UnitState, own_digest: str | None, vendor: str | None) -> AdoptUnit:
    """Record what an unmanaged unit is before it becomes ours.

    ``own_digest``: its file in the unit directory, if any; ``vendor``: the digest of the
    definition systemd loads from elsewhere (None: not read, e.g. no vendor file).
    """
    orig = Original(
        None,  # the engine reads the file's content when it records the marker
        vendor=own_digest is None and st.load_state not in ("not-found", "masked"),
        digest=own_digest if own_digest is not None else (vendor or ""),
        active=_up(name, st),
        enabled=st.unit_file_state in ENABLED,
        masked=st.load_state == "masked",
    )
    return AdoptUnit(name, orig, f"was unmanaged: {orig.describe()}")


def adopt_file(path: str, digest: str, mode: int) -> AdoptFile:
    orig = Original(None, mode, digest=digest)
    return AdoptFile(path, orig, f"was unmanaged: mode {mode:04o}")


def give_back(
    name: str, orig: Original, st: UnitState, ours: str | None, ran: Ran
) -> list[Action | Gate]:
    """Actions (and gates) that return a no longer desired adopted unit to ``orig``.

    ``ours``: the digest of the file in the unit directory now (None: none), ``ran``: the
    inventory's record of our version's last start.
    """
    why = f"no longer desired: give back the original ({orig.describe()})"
    out: list[Action | Gate] = []
    definition = ours  # what systemd will load once the file is given back
    if orig.content is not None:
        if ours != orig.digest:
            out.append(WriteUnit(name, orig.content, why))
            definition = orig.digest
    elif ours is not None:
        out.append(DeleteUnit(name, why))  # the vendor definition (or none) again
        definition = orig.digest or None  # a byte-identical copy changes nothing that runs
    redefined = definition != ours
    up = _up(name, st, ran)
    rule = unittypes.RULES[unittypes.kind_of(name, st.service_type, st.remain_after_exit)]
    if orig.active and not orig.masked:
        if redefined and st.active_state in RUNNING and rule.change is not Change.NOTHING:
            out += [RestartUnit(name, why), Gate(name, GIVE_BACK_TIMEOUT)]
        elif not up:
            out += [StartUnit(name, why), Gate(name, GIVE_BACK_TIMEOUT)]
    elif st.active_state in RUNNING:
        out.append(StopUnit(name, why, alone=True))
    if orig.masked and orig.content is None and not orig.vendor:
        out.append(MaskUnit(name, why))  # its mask again (it neither ran nor was enabled)
    elif orig.enabled and (redefined or st.unit_file_state not in ENABLED):
        out.append(EnableUnit(name, why))  # re-links to the definition given back
    elif not orig.enabled and st.unit_file_state in ENABLED:
        out.append(DisableUnit(name, why))
    return out


def run_records(
    spec: NodeSpec, observed: Observed, inv: Inventory, gated: frozenset[str]
) -> dict[str, Ran]:
    """What the inventory of a converged apply records of each unit's start (``Ran``).

    ``gated``: units this apply started and the gate passed (the engine marks those a
    condition skipped). A unit a timer, socket or path activates gets no record: it is
    not ours to run, so a collected oneshot of a timer never counts as up.
    """
    triggered = {t for u in spec.units if (t := unitfile.triggers(u.name, u.content))}
    out: dict[str, Ran] = {}
    for u in spec.units:
        st = observed.units.get(u.name, UnitState())
        app = inv.unit(u.name)
        if u.name in triggered or is_template(u.name):
            out[u.name] = Ran.UNKNOWN
        elif u.name in gated:
            out[u.name] = Ran.UP
        elif st.skipped and st.active_state == "inactive":
            out[u.name] = Ran.SKIPPED
        elif app is not None:
            out[u.name] = app.ran
        else:
            up = _up(u.name, st)
            out[u.name] = Ran.UP if up else Ran.UNKNOWN
    return out
