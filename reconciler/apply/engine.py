"""The apply engine: observe the node, execute a Plan in its phases, gate on health, roll back.

This is the imperative shell around the pure planner. One ``Engine`` per node (and per
systemd connection) is reused across reconcile passes by the agent::

    engine = Engine(systemd, state_dir, root=root)
    p = await engine.plan(spec)            # what `swarmkeeper plan` prints
    result = await engine.apply(spec)      # converged | rolled_back | failed

Before touching anything, ``apply`` records a ``pending`` marker in the inventory (target
revision, the units/files it adopts, the plan). Only when every started or restarted unit
passed the health gate does the inventory become the new spec. If one fails, the node is
rolled back to the inventory's last good state (units and files, from the inventory itself,
not git), what the rollback changed is restarted, and the result names the failing unit
with its state and systemd's description of the failure. A run killed midway leaves the
marker, so the next run still knows the adopted units are ours and that what it wrote was
not yet restarted: the next plan finishes the job.

The engine is composed of an ``Observer`` (``observe``, ``plan``: ``reconciler.apply.observe``)
and an ``Executor`` (actions, batching, the health gate: ``reconciler.apply.execute``); this
module holds the engine itself, the pending marker and the rollback.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from reconciler import log
from reconciler.actuators.inventory import InventoryStore
from reconciler.apply.execute import Abort, Executor
from reconciler.apply.observe import Observer, SystemdLike
from reconciler.errors import ActuatorError
from reconciler.models import NodeSpec, UnitName
from reconciler.plan import applied
from reconciler.plan import planner as P
from reconciler.plan.result import ActionResult, ApplyResult, Failure, Outcome

__all__ = ["ActionResult", "ApplyResult", "Engine", "Failure", "Outcome", "SystemdLike"]


class Engine:
    """Plans and applies NodeSpecs on one node; see the module docstring."""

    def __init__(
        self,
        systemd: SystemdLike,
        state_dir: Path,
        *,
        root: Path | None = None,
        unit_dir: Path | None = None,
        settle: float | None = None,
        after_action: Callable[[P.Action], None] | None = None,
    ) -> None:
        self.systemd = systemd
        self.store = InventoryStore(state_dir)
        self.root = Path(root) if root is not None else None
        self.unit_dir = Path(unit_dir) if unit_dir is not None else Path(systemd.unit_dir)
        self.log = log.get("swarmkeeper.apply")
        self.observer = Observer(systemd, self.store, root=self.root, unit_dir=self.unit_dir)
        self.executor = Executor(self.observer, settle=settle, after_action=after_action,
                                 log=self.log)  # fmt: skip
        self._lock = asyncio.Lock()  # one apply at a time, whoever calls

    @property
    def settle(self) -> float | None:
        """The health gate's settle window for units that set none (None: the actuator's)."""
        return self.executor.settle

    @settle.setter
    def settle(self, value: float | None) -> None:
        self.executor.settle = value

    @property
    def on_progress(self) -> Callable[[str], None] | None:
        """Called with ``"3/8 restart web.service"`` as each step of an apply starts."""
        return self.executor.on_progress

    @on_progress.setter
    def on_progress(self, value: Callable[[str], None] | None) -> None:
        self.executor.on_progress = value

    def inventory(self) -> applied.Inventory:
        return self.observer.inventory()

    async def plan(self, spec: NodeSpec, inv: applied.Inventory | None = None) -> P.Plan:
        """Exactly the plan ``apply(spec)`` would execute now (see ``Observer.plan``)."""
        return await self.observer.plan(spec, inv)

    async def observe(self, spec: NodeSpec, inv: applied.Inventory) -> P.Observed:
        return await self.observer.observe(spec, inv)

    # -- apply -----------------------------------------------------------------------------

    async def apply(self, spec: NodeSpec) -> ApplyResult:
        """Converge on ``spec``: converged, rolled back to the last good state, or failed.

        Raises only for what is not the node's fault: a corrupt or unwritable inventory
        (``ActuatorError``) before anything was touched, systemd unreachable while
        observing (``SystemdError``), or another process applying here (``NodeBusy``).
        """
        async with self._lock:
            with self.store.exclusive():  # and one per node, whichever process calls
                return await self._apply(spec)

    async def _apply(self, spec: NodeSpec) -> ApplyResult:
        t0 = time.perf_counter()
        inv = self.inventory()
        planned = self.observer.take_plan(spec, inv)  # the pass's plan, made just now
        observed, p = planned or await self.observer.observe_and_plan(spec, inv)
        resumed = inv.pending is not None
        if not p:
            # killed after its last action, before the inventory was saved; or a revision
            # that changes nothing here (it touched other nodes), which the node runs already
            # and must say so, or it would look "behind" for good
            if resumed or inv.revision != spec.revision:
                ran = P.run_records(spec, observed, inv, frozenset())
                self.store.save(
                    applied.from_spec(spec, updated_at=time.time(), ran=ran, before=inv)
                )
            return ApplyResult(
                Outcome.CONVERGED,
                spec.revision,
                spec.revision,
                (),
                duration=time.perf_counter() - t0,
                resumed=resumed,
            )
        self.log.info("apply.start", revision=spec.revision[:12], actions=len(p),
                      units=sorted({u for a in p for u in _units_of(a)}))  # fmt: skip
        marked = replace(inv, pending=await self._pending(spec, inv, observed, p))
        await asyncio.to_thread(self.store.save, marked)
        done: list[ActionResult] = []
        self.executor.next_observe = tuple(
            self.observer.systemd_names(self.observer.unit_names(spec, inv))
        )
        gated = frozenset(g.unit for a in p if isinstance(a, P.Verify) for g in a.units)
        # the gate stages its inventory while it waits
        self.executor.converged = (spec, marked, P.run_records(spec, observed, marked, gated))
        self.executor.gate_skipped = set()
        try:
            try:
                await self.executor.execute(p, done)
            except Abort as e:
                self.executor.drop_staged()
                return await self._rollback(
                    spec, marked, tuple(done), e.failure, e.error, t0, resumed, observed
                )
            except ActuatorError as e:  # systemd itself failed (connection lost, call rejected)
                self.executor.drop_staged()
                return await self._rollback(
                    spec, marked, tuple(done), None, str(e), t0, resumed, observed
                )
            if self.executor.gate_skipped and self.executor.staging is not None:
                self.executor.drop_staged(keep_target=True)  # staged before the gate knew
            staged = await self.executor.stage_converged()  # staged by the gate, or now
            self.executor.staging = None
            await asyncio.to_thread(self.store.commit, staged)
        finally:
            self.executor.drop_staged()  # cancelled or failed: no stray temp file
        return ApplyResult(
            Outcome.CONVERGED,
            spec.revision,
            spec.revision,
            tuple(done),
            duration=time.perf_counter() - t0,
            resumed=resumed,
        )

    async def _pending(
        self, spec: NodeSpec, inv: applied.Inventory, observed: P.Observed, p: P.Plan
    ) -> applied.Pending:
        """The marker saved before acting: target, adopted names and what they were before.

        The plan's ``adopt`` actions say what each adopted name is (running, enabled, a
        vendor definition...); the content of its file is read here, once, into the record.
        """
        managed_units, managed_files = set(inv.managed_units()), set(inv.managed_files())
        new_units = [n for n in spec.unit_names if n not in managed_units]
        new_files = [f.path for f in spec.files if f.path not in managed_files]
        adopt_units = [a for a in p if isinstance(a, P.AdoptUnit)]
        adopt_files = [a for a in p if isinstance(a, P.AdoptFile)]

        def own(path: Path, orig: applied.Original) -> applied.Original:
            if path.is_symlink() and os.path.realpath(path) == os.devnull:
                return replace(orig, masked=True)  # a mask: there is no content of its own
            return replace(orig, content=path.read_bytes())

        def unit(a: P.AdoptUnit) -> tuple[UnitName, applied.Original]:
            path = self.unit_dir / a.unit
            mine = not a.original.vendor and (path.is_symlink() or path.exists())
            return UnitName(a.unit), own(path, a.original) if mine else a.original

        def read() -> tuple[
            list[tuple[UnitName, applied.Original]], list[tuple[str, applied.Original]]
        ]:
            files_ = [
                (a.path, own(self.observer.file_path(a.path), a.original)) for a in adopt_files
            ]
            return [unit(a) for a in adopt_units], files_

        try:  # nothing adopted (most applies): no hop to a thread to read nothing
            adopted_units, adopted_files = (
                await asyncio.to_thread(read) if adopt_units or adopt_files else ([], [])
            )
        except OSError as e:
            raise ActuatorError(f"cannot read a unit or file before adopting it: {e}") from e
        prev = inv.pending or applied.Pending(spec.revision)
        return applied.Pending(
            revision=spec.revision,
            units=(*prev.units, *new_units),
            files=(*prev.files, *new_files),
            actions=tuple(P.describe(a) for a in p),
            started_at=time.time(),
            adopted_units=(*prev.adopted_units, *adopted_units),
            adopted_files=(*prev.adopted_files, *adopted_files),
        )

    async def _rollback(
        self,
        spec: NodeSpec,
        marked: applied.Inventory,
        done: tuple[ActionResult, ...],
        failure: Failure | None,
        error: str,
        t0: float,
        resumed: bool,
        before: P.Observed,
    ) -> ApplyResult:
        """Back to the inventory's last good state; the pending marker keeps adopted units ours.

        ``before``: the node as the failed apply found it; what ran then runs again (a
        service the failed apply stopped with its socket is not otherwise started)."""
        self.log.warning("rolling back", revision=spec.revision, to=marked.revision, error=error)
        target = applied.to_spec(marked, like=spec)
        undo: list[ActionResult] = []
        outcome = Outcome.ROLLED_BACK
        try:
            running = frozenset(n for n, st in before.units.items() if st.active_state in P.RUNNING)
            back = f"rollback to {marked.revision or 'nothing applied'}"
            # Twice at most: a stop the first pass makes can stop units that require the
            # stopped one (systemd propagates it); the second pass starts them again.
            for _ in range(2):
                now = await self.observe(target, marked)
                rb = P.plan(
                    target, now, marked, root=self.observer.root_str, running_before=running
                )
                if not rb:
                    break
                # the planner sees the failed apply's changes as drift from the inventory
                rb = tuple(
                    a
                    if isinstance(a, P.DaemonReload | P.Verify)
                    else replace(
                        a, reason=f"{back} ({a.reason.removeprefix('drift: ')})", drift=False
                    )
                    for a in rb
                )
                await self.executor.execute(rb, undo)
        except (Abort, ActuatorError) as e:
            outcome = Outcome.FAILED
            error += f"; rollback failed: {e.error if isinstance(e, Abort) else e}"
        else:
            await asyncio.to_thread(
                self.store.save, replace(marked, pending=None, failed_revision=spec.revision)
            )
        return ApplyResult(
            outcome,
            spec.revision,
            marked.revision,
            done,
            rollback=tuple(undo),
            failure=failure,
            error=error,
            duration=time.perf_counter() - t0,
            resumed=resumed,
        )


def _units_of(a: P.Action) -> tuple[str, ...]:
    if isinstance(a, P.Verify):
        return tuple(g.unit for g in a.units)
    unit = getattr(a, "unit", None)
    return (unit,) if isinstance(unit, str) else ()
