"""What a reconcile pass tells operators: ``PassResult`` -> notification events, once per change.

The agent calls ``PassEvents.events(result)`` after every pass and emits what it returns.
Level-triggered passes repeat themselves (a rejected revision is re-seen on every pass until
a new one is published), so this keeps the little state needed to announce each change once:

- ``revision_applied``: a new revision converged (``info``);
- ``drift_repaired``: nothing new was published but drifted units/files were put back, one
  event per unit (files together), so coalescing can fold a unit that drifts on every pass;
- ``apply_rolled_back``: the health gate failed and the node went back (``error``), naming
  the failing unit; ``failed`` outcomes (the rollback failed too) say so;
- ``rollout_halted``: with the rollback of a *new* revision, since this node's failure halts
  that revision's rollout for the whole cluster;
- ``revision_rejected``: once per rejected revision (``error``), with its problems.

Agent-level events (agent started/stopped, swarm joined/left) and service health are
emitted where they happen, not here.
"""

from __future__ import annotations

from reconciler.agent.passes import PassResult
from reconciler.notify.events import Event, EventKind, Severity
from reconciler.notify.notifiers import short_revision
from reconciler.plan import planner as P
from reconciler.plan.result import ActionResult, Outcome

MAX_DRIFT_EVENTS = 10  # per pass; the rest are summarised in the last one


class PassEvents:
    def __init__(self, node: str, *, announce_rejections: bool = True) -> None:
        self.node = node
        # Every node rejects the same bad commit; a cluster may want only one node (e.g. the
        # swarm leader) to say so. The agent can flip this as leadership changes.
        self.announce_rejections = announce_rejections
        self._rejected = ""

    def events(self, result: PassResult) -> list[Event]:
        out: list[Event] = []
        rej = result.rejection
        if rej is None:
            self._rejected = ""
        elif rej.revision != self._rejected:
            self._rejected = rej.revision
            if self.announce_rejections:
                out.append(
                    Event.of(
                        EventKind.REVISION_REJECTED,
                        self.node,
                        revision=rej.revision,
                        message=_first_line(rej.summary),
                        details={"problems": list(rej.problems[:20]), "count": len(rej.problems)},
                    )
                )
        res = result.result
        if res is None or not res.changed:
            return out
        if res.outcome is Outcome.CONVERGED:
            if result.new_revision:
                out.append(
                    Event.of(
                        EventKind.REVISION_APPLIED,
                        self.node,
                        revision=res.revision,
                        message=f"{len(res.actions)} action(s) in {res.duration:.1f}s",
                        details={"actions": len(res.actions), "seconds": round(res.duration, 3)},
                    )
                )
            else:
                out.extend(self._drift(res.revision, res.actions))
            return out
        failure = res.failure
        back_to = short_revision(res.applied or "") or "nothing"
        if res.outcome is Outcome.ROLLED_BACK:
            what = f"{failure.unit} {failure.state}" if failure else (res.error or "apply failed")
            message, severity = f"{what}; rolled back to {back_to}", Severity.ERROR
        else:
            what = res.error or (f"{failure.unit} {failure.state}" if failure else "apply failed")
            message, severity = f"{what}; rollback failed too, node needs a look", Severity.ERROR
        out.append(
            Event.of(
                EventKind.APPLY_ROLLED_BACK,
                self.node,
                revision=res.revision,
                unit=failure.unit if failure else "",
                message=_first_line(message),
                severity=severity,
                details={
                    "outcome": str(res.outcome),
                    "applied": res.applied or "",
                    "detail": failure.detail[-2000:] if failure else res.error,
                },
            )
        )
        if result.halts_rollout:
            # this node marks the revision failed, which halts its rollout cluster-wide
            out.append(
                Event.of(
                    EventKind.ROLLOUT_HALTED,
                    self.node,
                    revision=res.revision,
                    unit=failure.unit if failure else "",
                    message=f"rollout of {short_revision(res.revision)} halted: it failed here",
                )
            )
        return out

    def _drift(self, revision: str, actions: tuple[ActionResult, ...]) -> list[Event]:
        by_unit: dict[str, list[str]] = {}
        files: list[str] = []
        for r in actions:
            a = r.action
            if not a.drift:
                continue
            if isinstance(a, P.WriteFile | P.DeleteFile | P.AdoptFile):
                files.append(P.describe(a))
            elif isinstance(a, P.Verify | P.DaemonReload):
                continue  # follow-ups of the repair, not drift of their own
            else:
                by_unit.setdefault(a.unit, []).append(P.describe(a))
        out = []
        units = sorted(by_unit)
        shown, rest = units[:MAX_DRIFT_EVENTS], units[MAX_DRIFT_EVENTS:]
        for unit in shown:
            text = "; ".join(by_unit[unit])
            if unit == shown[-1] and rest:
                text += f" (and {len(rest)} more unit(s): {', '.join(rest)})"
            out.append(
                Event.of(
                    EventKind.DRIFT_REPAIRED,
                    self.node,
                    revision=revision,
                    unit=unit,
                    message=_first_line(text),
                    details={"actions": by_unit[unit]},
                )
            )
        if files:
            out.append(
                Event.of(
                    EventKind.DRIFT_REPAIRED,
                    self.node,
                    revision=revision,
                    message=_first_line("; ".join(files)),
                    details={"actions": files},
                )
            )
        return out


def _first_line(text: str, limit: int = 300) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
