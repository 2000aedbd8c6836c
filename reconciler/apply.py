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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from reconciler import applied, log
from reconciler import plan as P
from reconciler.actuators import files
from reconciler.actuators.inventory import InventoryStore
from reconciler.applyresult import ActionResult, ApplyResult, Failure, Outcome
from reconciler.errors import ActuatorError, SystemdError, UnitFailed
from reconciler.models import NodeSpec

__all__ = ["ActionResult", "ApplyResult", "Engine", "Failure", "Outcome", "SystemdLike"]


class SystemdLike(Protocol):
    """What the engine needs of ``reconciler.actuators.systemd.Systemd``."""

    unit_dir: Path
    mutating_calls: int

    async def status(self, names: Sequence[str], *, need_reload: bool = True) -> dict[str, Any]: ...
    async def daemon_reload(self) -> None: ...
    async def start(self, name: str) -> str: ...
    async def stop(self, name: str) -> str: ...
    async def restart(self, name: str) -> str: ...
    async def reload(self, name: str) -> str: ...
    async def enable(self, names: Sequence[str]) -> None: ...
    async def disable(self, names: Sequence[str]) -> None: ...
    async def reset_failed(self, name: str) -> None: ...
    async def wait_healthy(
        self,
        name: str,
        timeout: float,  # noqa: ASYNC109
        *,
        settle: float | None = None,
    ) -> Any: ...
    async def describe_failure(self, name: str, lines: int = 20) -> str: ...
    async def warm(self, names: Sequence[str], ends: float) -> None: ...
    async def need_daemon_reload(self, names: Sequence[str]) -> dict[str, bool]: ...


class _Abort(Exception):
    def __init__(self, failure: Failure | None, error: str) -> None:
        super().__init__(error)
        self.failure = failure
        self.error = error


def _unit_states(statuses: dict[str, Any]) -> dict[str, P.UnitState]:
    return {
        n: P.UnitState(
            st.load_state,
            st.active_state,
            st.sub_state,
            st.unit_file_state,
            st.invocation_id,
            st.result,
            st.service_type,
            st.remain_after_exit,
            getattr(st, "need_daemon_reload", False),
        )
        for n, st in statuses.items()
    }


def _discard_staged(task: asyncio.Task[files.Staged]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().discard()


def _state_text(st: Any) -> str:
    return f"{st.active_state} ({st.result or st.sub_state})" if st is not None else "unknown"


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
        # Units without a readiness protocol (Type=simple...) are "active" from the fork on;
        # the health gate wants them up this long, so ExecStart=/bin/false fails the gate
        # instead of passing it. A unit's own ``settle`` wins; None here: the actuator's
        # default (DEFAULT_SETTLE). Benches and tests set it to compare windows.
        self.settle = settle
        self.after_action = after_action  # tests use it to kill the process mid-apply
        self.log = log.get("swarmkeeper.apply")
        self._root_str = str(self.root) if self.root is not None else ""
        self._lock = asyncio.Lock()  # one apply at a time, whoever calls
        self._next_observe: tuple[str, ...] = ()  # units the next observe reads (see _verify)
        # The inventory an apply saves once its gate passed, staged while the gate waits
        # (serialise, write, fsync: ~4 ms off every change); see _stage_converged.
        self._converged: NodeSpec | None = None
        self._staging: asyncio.Task[files.Staged] | None = None
        self._digests = files.Digests()  # observe re-hashes only files whose stat changed

    def file_path(self, path: str) -> Path:
        return self.root / path.lstrip("/") if self.root is not None else Path(path)

    # -- observe ---------------------------------------------------------------------------

    def _read_disk(
        self, names: Sequence[str], paths: Sequence[str]
    ) -> tuple[dict[str, str], dict[str, P.FileState]]:
        unit_files: dict[str, str] = {}
        looked = set()
        for n in names:
            up = self.unit_dir / n
            looked.add(up)
            try:
                unit_files[n] = self._digests.read(up)[0]
            except FileNotFoundError:
                continue
        found: dict[str, P.FileState] = {}
        for p in paths:
            fp = self.file_path(p)
            looked.add(fp)
            try:
                found[p] = P.FileState(*self._digests.read(fp))
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                continue
        self._digests.keep(looked)
        return unit_files, found

    @staticmethod
    def _unit_names(spec: NodeSpec, inv: applied.Inventory) -> list[str]:
        return list(dict.fromkeys([*spec.unit_names, *inv.managed_units()]))

    def _where(self, spec: NodeSpec, inv: applied.Inventory) -> tuple[list[str], list[str]]:
        names = self._unit_names(spec, inv)
        paths = list(dict.fromkeys([*(f.path for f in spec.files), *inv.managed_files()]))
        return names, paths

    async def observe(self, spec: NodeSpec, inv: applied.Inventory) -> P.Observed:
        """The node now: the disk and systemd read at the same time."""
        names, paths = self._where(spec, inv)
        disk = asyncio.create_task(
            asyncio.to_thread(self._read_disk, names, paths), name="observe-disk"
        )
        try:
            statuses = await self.systemd.status(names)
        finally:
            unit_files, found = await disk
        return P.Observed(unit_files=unit_files, files=found, units=_unit_states(statuses))

    async def _observe_and_plan(
        self, spec: NodeSpec, inv: applied.Inventory
    ) -> tuple[P.Observed, P.Plan]:
        """Observe and plan, reading NeedDaemonReload only when it can change the plan.

        It is the one status property read fresh for every unit (50 units: ~5 ms of calls),
        and all it decides is whether the plan gets a daemon-reload (see ``plan.UnitState``).
        A unit file on disk that differs from the spec is written, and that brings a reload:
        so it is read only when no unit file differs (a no-op pass, a file or drift
        repair). Should a plan without a reload come out anyway, it is read then, and the
        plan redone if a unit needs a reload.
        """
        names, paths = self._where(spec, inv)
        disk = asyncio.create_task(
            asyncio.to_thread(self._read_disk, names, paths), name="observe-disk"
        )
        try:
            statuses = await self.systemd.status(names, need_reload=False)
        finally:
            unit_files, found = await disk
        observed = P.Observed(unit_files=unit_files, files=found, units=_unit_states(statuses))
        writes = any(unit_files.get(u.name) != u.digest for u in spec.units)
        if not writes:
            observed = await self._with_need_reload(observed)
        p = P.plan(spec, observed, inv, root=self._root_str)
        if not writes or any(isinstance(a, P.DaemonReload) for a in p):
            return observed, p
        stale = await self._with_need_reload(observed)
        return (
            (observed, p)
            if stale == observed
            else (stale, P.plan(spec, stale, inv, root=self._root_str))
        )

    async def _with_need_reload(self, observed: P.Observed) -> P.Observed:
        loaded = [n for n, st in observed.units.items() if st.load_state != "not-found"]
        stale = {n for n, v in (await self.systemd.need_daemon_reload(loaded)).items() if v}
        if not stale:
            return observed
        units = {n: replace(st, need_daemon_reload=n in stale) for n, st in observed.units.items()}
        return replace(observed, units=units)

    def inventory(self) -> applied.Inventory:
        return self.store.load()

    async def plan(self, spec: NodeSpec) -> P.Plan:
        """Exactly the plan ``apply(spec)`` would execute now."""
        return (await self._observe_and_plan(spec, self.inventory()))[1]

    # -- execute ---------------------------------------------------------------------------

    async def _job(self, unit: str, verb: str, call: Callable[[str], Any]) -> str:
        try:
            result: str = await call(unit)
        except SystemdError as e:  # refused outright (bad unit file, not reloadable...)
            if getattr(e, "name", None) is None:
                raise  # the connection itself: not the unit's fault
            raise _Abort(Failure(unit, f"{verb} refused", str(e)), f"{verb} {unit}: {e}") from e
        if result != "done":
            st = (await self.systemd.status([unit])).get(unit)
            detail = await self._describe(unit)
            raise _Abort(
                Failure(unit, f"{verb} job {result}; {_state_text(st)}", detail),
                f"{verb} {unit}: job {result}",
            )
        return result

    async def _describe(self, unit: str) -> str:
        try:
            return await self.systemd.describe_failure(unit)
        except ActuatorError as e:
            return f"(no description: {e})"

    def _settle(self, gate: P.Gate) -> float | None:
        """The unit's own window wins; else the engine's; None: the actuator's default."""
        return gate.settle if gate.settle is not None else self.settle

    def _window(self, gate: P.Gate) -> float:
        settle = self._settle(gate)
        return float(getattr(self.systemd, "settle", 0.0)) if settle is None else settle

    async def _healthy(self, gate: P.Gate) -> None:
        st = await self.systemd.wait_healthy(gate.unit, gate.timeout, settle=self._settle(gate))
        if not st.healthy:
            raise UnitFailed(gate.unit, _state_text(st), await self._describe(gate.unit))

    async def _verify(self, units: tuple[P.Gate, ...]) -> str:
        # All units share one gate: their settle windows run concurrently, each counted from
        # the unit's own activation, so N restarted units cost one window, not N.
        warm = None
        window = max((self._window(g) for g in units), default=0.0)
        if self._next_observe and window > 0:
            ends = asyncio.get_running_loop().time() + window  # the last unit just started
            warm = asyncio.create_task(self._warm(self._next_observe, ends), name="warm-observe")
        if self._converged is not None:
            self._stage_converged(self._converged)
        try:
            async with asyncio.TaskGroup() as tg:
                for gate in units:
                    tg.create_task(self._healthy(gate), name=f"health-{gate.unit}")
        except* UnitFailed as eg:
            first = eg.exceptions[0]
            assert isinstance(first, UnitFailed)
            raise _Abort(
                Failure(first.unit, first.state, first.detail), str(first).splitlines()[0]
            ) from None
        finally:
            if warm is not None:
                warm.cancel()
                await asyncio.wait([warm])  # never raises the task's own error or cancellation
                if not warm.cancelled():
                    warm.exception()
        return "healthy"

    def _stage_converged(self, spec: NodeSpec) -> asyncio.Task[files.Staged]:
        """Write the inventory of a converged apply, not yet in place (see _apply).

        The gate mostly waits (its settle window); the inventory's serialisation and fsync
        fit in there. Only ``commit`` (rename, fsync of the directory) waits for the gate:
        until then the inventory on disk still holds the pending marker.
        """
        if self._staging is None:
            inv = applied.from_spec(spec, updated_at=time.time())
            self._staging = asyncio.create_task(
                asyncio.to_thread(self.store.stage, inv), name="stage-inventory"
            )
        return self._staging

    def _drop_staged(self) -> None:
        """Forget the converged inventory; a staged temp file is removed once written."""
        task, self._staging, self._converged = self._staging, None, None
        if task is not None:
            task.add_done_callback(_discard_staged)

    async def _warm(self, names: Sequence[str], ends: float) -> None:
        """Read the statuses the next observe needs while the health gate waits anyway.

        After a daemon-reload systemd recomputes each unit's UnitFileState from disk on its
        first read (~1.1 ms of the manager's time per unit, 57 ms for 50; GetAll,
        GetUnitFileState and ListUnitFilesByPatterns cost the same). Systemd is idle during
        the settle window and keeps the value until the next reload, so reading it here
        takes that cost off the next pass; what does not fit before the window ``ends``,
        the next observe reads. Cancelled when the gate is done.
        """
        try:
            await self.systemd.warm(names, ends)
        except ActuatorError:
            return  # only a head start: the next observe reads (and reports) for real

    async def _one(self, a: P.Action) -> str:
        try:
            return await self._one_unguarded(a)
        except OSError as e:  # a write or delete failed (disk full, read-only, permissions)
            raise _Abort(None, f"{P.describe(a)}: {e}") from e

    async def _one_unguarded(self, a: P.Action) -> str:
        sd = self.systemd
        match a:
            case P.StopUnit():
                result = await sd.stop(a.unit)
                if a.reset_failed:
                    await sd.reset_failed(a.unit)
                return result
            case P.WriteUnit():
                return str(
                    await asyncio.to_thread(
                        files.write_atomic, self.unit_dir / a.unit, a.content, 0o644
                    )
                )
            case P.WriteFile():
                return str(
                    await asyncio.to_thread(
                        files.write_atomic, self.file_path(a.path), a.content, a.mode
                    )
                )
            case P.DaemonReload():
                await sd.daemon_reload()
                return "done"
            case P.ReloadUnit():
                return await self._job(a.unit, "reload", sd.reload)
            case P.RestartUnit():
                return await self._job(a.unit, "restart", sd.restart)
            case P.StartUnit():
                return await self._job(a.unit, "start", sd.start)
            case P.DeleteUnit():
                gone = await asyncio.to_thread(files.remove, self.unit_dir / a.unit)
                return "removed" if gone else "absent"
            case P.DeleteFile():
                gone = await asyncio.to_thread(files.remove, self.file_path(a.path))
                return "removed" if gone else "absent"
            case P.Verify():
                return await self._verify(a.units)
            case P.EnableUnit() | P.DisableUnit():  # batched by _execute; kept for completeness
                await (sd.enable if isinstance(a, P.EnableUnit) else sd.disable)([a.unit])
                return "done"
        raise AssertionError(f"unknown action {a!r}")

    async def _execute(self, plan: P.Plan, done: list[ActionResult]) -> None:
        i = 0
        while i < len(plan):
            a = plan[i]
            t0 = time.perf_counter()
            if isinstance(a, P.WriteUnit | P.WriteFile):
                # independent files: their fsyncs overlap (50 writes 720 ms -> see bench)
                batch = []
                while i < len(plan) and isinstance(plan[i], P.WriteUnit | P.WriteFile):
                    batch.append(plan[i])
                    i += 1
                # gather, not a TaskGroup: cancelling cannot stop a write already in its
                # thread, and a rollback must not observe the disk while writes still land
                results = await asyncio.gather(
                    *(self._write(b) for b in batch), return_exceptions=True
                )
                dt = time.perf_counter() - t0
                for b, res in zip(batch, results, strict=True):
                    done.append(
                        ActionResult(b, "failed" if isinstance(res, BaseException) else res, dt)
                    )
                for res in results:
                    if isinstance(res, BaseException):
                        raise res
                continue
            if isinstance(a, P.EnableUnit | P.DisableUnit):
                # one EnableUnitFiles/DisableUnitFiles call (and at most one reload) per batch
                kind = type(a)
                batch = []
                while i < len(plan) and type(plan[i]) is kind:
                    batch.append(plan[i])
                    i += 1
                names = [b.unit for b in batch if isinstance(b, P.EnableUnit | P.DisableUnit)]
                await (self.systemd.enable if kind is P.EnableUnit else self.systemd.disable)(names)
                dt = time.perf_counter() - t0
                for b in batch:
                    done.append(ActionResult(b, "done", dt))
                    self._after(b, "done")
                continue
            try:
                result = await self._one(a)
            except _Abort as e:
                done.append(ActionResult(a, "failed", time.perf_counter() - t0))
                self.log.warning("action failed", action=P.describe(a), error=e.error)
                raise
            done.append(ActionResult(a, result, time.perf_counter() - t0))
            self._after(a, result)
            i += 1

    async def _write(self, a: P.Action) -> str:
        result = await self._one(a)
        self._after(a, result)  # as each write lands: a crash hook can fall between writes
        return result

    def _after(self, a: P.Action, result: str) -> None:
        self.log.debug("applied", action=P.describe(a), result=result, drift=a.drift)
        if self.after_action is not None:
            self.after_action(a)

    # -- apply -----------------------------------------------------------------------------

    async def apply(self, spec: NodeSpec) -> ApplyResult:
        """Converge on ``spec``: converged, rolled back to the last good state, or failed.

        Raises only for what is not the node's fault: a corrupt or unwritable inventory
        (``ActuatorError``) before anything was touched, or systemd unreachable while
        observing (``SystemdError``).
        """
        async with self._lock:
            return await self._apply(spec)

    async def _apply(self, spec: NodeSpec) -> ApplyResult:
        t0 = time.perf_counter()
        inv = self.inventory()
        observed, p = await self._observe_and_plan(spec, inv)
        resumed = inv.pending is not None
        if not p:
            if resumed:  # killed after its last action, before the inventory was saved
                self.store.save(applied.from_spec(spec, updated_at=time.time()))
            return ApplyResult(
                Outcome.CONVERGED,
                spec.revision,
                spec.revision,
                (),
                duration=time.perf_counter() - t0,
                resumed=resumed,
            )
        marked = replace(inv, pending=await self._pending(spec, inv, observed, p))
        await asyncio.to_thread(self.store.save, marked)
        done: list[ActionResult] = []
        self._next_observe = tuple(self._unit_names(spec, inv))
        self._converged = spec  # the gate stages its inventory while it waits
        try:
            try:
                await self._execute(p, done)
            except _Abort as e:
                self._drop_staged()
                return await self._rollback(
                    spec, marked, tuple(done), e.failure, e.error, t0, resumed
                )
            except ActuatorError as e:  # systemd itself failed (connection lost, call rejected)
                self._drop_staged()
                return await self._rollback(spec, marked, tuple(done), None, str(e), t0, resumed)
            staged = await self._stage_converged(spec)  # staged by the gate, or now
            self._staging = None
            await asyncio.to_thread(self.store.commit, staged)
        finally:
            self._drop_staged()  # cancelled or failed: no stray temp file
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
        """The marker saved before acting: target, adopted names and what they held before."""
        managed_units, managed_files = set(inv.managed_units()), set(inv.managed_files())
        new_units = [n for n in spec.unit_names if n not in managed_units]
        new_files = [f.path for f in spec.files if f.path not in managed_files]
        taken_units = [n for n in new_units if n in observed.unit_files]
        taken_files = [f for f in new_files if f in observed.files]

        def read() -> tuple[list[applied.AppliedUnit], list[applied.AppliedFile]]:
            units = [applied.AppliedUnit(n, (self.unit_dir / n).read_bytes()) for n in taken_units]
            files_ = [
                applied.AppliedFile(f, self.file_path(f).read_bytes(), observed.files[f].mode)
                for f in taken_files
            ]
            return units, files_

        try:
            orig_units, orig_files = await asyncio.to_thread(read)
        except OSError as e:
            raise ActuatorError(f"cannot read a unit or file before adopting it: {e}") from e
        prev = inv.pending or applied.Pending(spec.revision)
        states = {n: observed.units.get(n, P.UnitState()) for n in taken_units}
        return applied.Pending(
            revision=spec.revision,
            units=(*prev.units, *new_units),
            files=(*prev.files, *new_files),
            actions=tuple(P.describe(a) for a in p),
            started_at=time.time(),
            original_units=(*prev.original_units, *orig_units),
            original_files=(*prev.original_files, *orig_files),
            originally_active=(
                *prev.originally_active,
                *(n for n, st in states.items() if P.is_up(st)),
            ),
            originally_enabled=(
                *prev.originally_enabled,
                *(
                    n
                    for n, st in states.items()
                    if st.unit_file_state in ("enabled", "enabled-runtime")
                ),
            ),
        )

    @staticmethod
    def _give_back(pending: applied.Pending | None) -> P.Plan:
        """Actions that return adopted names to what they held before the failed apply."""
        if pending is None:
            return ()
        why = "rollback: give back the unmanaged original"
        writes: list[P.Action] = [
            P.WriteUnit(u.name, u.content, why) for u in pending.original_units
        ]
        writes += [P.WriteFile(f.path, f.content, f.mode, why) for f in pending.original_files]
        reload: list[P.Action] = [P.DaemonReload(why)] if pending.original_units else []
        starts: list[P.Action] = [P.StartUnit(n, why) for n in pending.originally_active]
        enables: list[P.Action] = [P.EnableUnit(n, why) for n in pending.originally_enabled]
        return (*writes, *reload, *starts, *enables)

    async def _rollback(
        self,
        spec: NodeSpec,
        marked: applied.Inventory,
        done: tuple[ActionResult, ...],
        failure: Failure | None,
        error: str,
        t0: float,
        resumed: bool,
    ) -> ApplyResult:
        """Back to the inventory's last good state; the pending marker keeps adopted units ours."""
        self.log.warning("rolling back", revision=spec.revision, to=marked.revision, error=error)
        target = applied.to_spec(marked, like=spec)
        undo: list[ActionResult] = []
        outcome = Outcome.ROLLED_BACK
        try:
            rb = P.plan(target, await self.observe(target, marked), marked, root=self._root_str)
            # the planner sees the failed apply's changes as drift from the inventory: say why
            back = f"rollback to {marked.revision or 'nothing applied'}"
            rb = tuple(
                a
                if isinstance(a, P.DaemonReload | P.Verify)
                else replace(a, reason=f"{back} ({a.reason.removeprefix('drift: ')})", drift=False)
                for a in rb
            )
            await self._execute((*rb, *self._give_back(marked.pending)), undo)
        except (_Abort, ActuatorError) as e:
            outcome = Outcome.FAILED
            error += f"; rollback failed: {e.error if isinstance(e, _Abort) else e}"
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
