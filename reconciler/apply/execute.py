"""How the apply engine executes a Plan: its actions in phase order, then the health gate.

The engine's ``Executor``, composed with the engine's ``Observer`` (whose paths it writes to). Independent writes run concurrently, enables and disables go
in one call per batch, and every unit the plan started or restarted shares one health gate.
A failed job, a refused call or a failed write raises ``Abort`` with the ``Failure`` the
result reports; ``reconciler.apply.engine`` catches it and rolls back. While the gate waits, the
converged inventory is staged and the statuses the next observe reads are warmed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog

from reconciler.actuators import files
from reconciler.apply.observe import Observer
from reconciler.errors import ActuatorError, SystemdError, UnitFailed
from reconciler.models import NodeSpec
from reconciler.plan import applied, unittypes
from reconciler.plan import planner as P
from reconciler.plan.result import ActionResult, Failure
from reconciler.plan.unittypes import Kind, Ran


class Abort(Exception):
    """An action failed: stop executing the plan; ``failure`` names the unit, if any."""

    def __init__(self, failure: Failure | None, error: str) -> None:
        super().__init__(error)
        self.failure = failure
        self.error = error


def _discard_staged(task: asyncio.Task[files.Staged]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().discard()


def step_text(a: P.Action, batch: int = 1) -> str:
    """``restart web.service``, ``write 3 files``, ``verify 2 unit(s)``: a step in words."""
    if isinstance(a, P.Verify):
        return f"verify {len(a.units)} unit(s)"
    if batch > 1:
        noun = "files" if isinstance(a, P.WriteUnit | P.WriteFile) else "units"
        return f"{a.VERB} {batch} {noun}"
    target = getattr(a, "unit", None) or getattr(a, "path", None) or ""
    return f"{a.VERB} {target}".rstrip()


def _batch_len(plan: P.Plan, i: int) -> int:
    """How many actions ``_execute`` runs as one batch from ``plan[i]`` (1: not batched)."""
    a = plan[i]
    if isinstance(a, P.WriteUnit | P.WriteFile):
        kinds: tuple[type, ...] = (P.WriteUnit, P.WriteFile)  # the writes share one batch
    elif isinstance(a, P.EnableUnit | P.DisableUnit):
        kinds = (type(a),)
    else:
        return 1
    n = 1
    while i + n < len(plan) and type(plan[i + n]) in kinds:
        n += 1
    return n


def _state_text(st: Any) -> str:
    """``failed (resources: systemd could not set it up …)``: systemd's Result in words."""
    from reconciler.actuators.describe import result_text

    if st is None:
        return "unknown"
    if getattr(st, "restarts", 0):
        return f"restarting ({st.restarts} restarts in the window)"
    why = result_text(st.result) if st.result and st.result != "success" else st.sub_state
    return f"{st.active_state} ({why})"


class Executor:
    """The engine's acting side: runs a plan's actions and the health gate."""

    def __init__(
        self,
        observer: Observer,
        *,
        settle: float | None,
        after_action: Callable[[P.Action], None] | None,
        log: structlog.typing.FilteringBoundLogger,
    ) -> None:
        self.observer = observer
        self.systemd = observer.systemd
        self.store = observer.store
        # Units without a readiness protocol (Type=simple...) are "active" from the fork
        # on; the health gate wants them up this long, so ExecStart=/bin/false fails the
        # gate instead of passing it. A unit's own ``settle`` wins; None here: the
        # actuator's default (DEFAULT_SETTLE). Benches and tests set it to compare windows.
        self.settle = settle
        self.after_action = after_action  # tests use it to kill the process mid-apply
        self.on_progress: Callable[[str], None] | None = None  # "3/8 restart web.service"
        self.log = log
        self.next_observe: tuple[str, ...] = ()  # units the next observe reads (see _verify)
        # The inventory an apply saves once its gate passed, staged while the gate waits
        # (serialise, write, fsync: ~4 ms off every change); see stage_converged.
        # (spec, the inventory it starts from, what each unit's start did as far as known)
        self.converged: tuple[NodeSpec, applied.Inventory, dict[str, Ran]] | None = None
        self.gate_skipped: set[str] = set()  # gated units a false condition skipped
        self.staging: asyncio.Task[files.Staged] | None = None
        self._job_mark = 0  # the actuator's job_serial when the plan began

    async def _job(self, unit: str, verb: str, call: Callable[[str], Any]) -> str:
        try:
            result: str = await call(unit)
        except SystemdError as e:  # refused outright (bad unit file, not reloadable...)
            if getattr(e, "name", None) is None:
                raise  # the connection itself: not the unit's fault
            raise Abort(Failure(unit, f"{verb} refused", str(e)), f"{verb} {unit}: {e}") from e
        if result != "done":
            st = (await self.systemd.status([unit])).get(unit)
            detail = await self._describe(unit)
            raise Abort(
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
        if st.active_state == "inactive" and getattr(st, "skipped", False):
            self.gate_skipped.add(gate.unit)  # the inventory remembers it (Ran.SKIPPED)

    async def _verify(self, units: tuple[P.Gate, ...]) -> str:
        # All units share one gate: their settle windows run concurrently, each counted from
        # the unit's own activation, so N restarted units cost one window, not N.
        warm = None
        window = max((self._window(g) for g in units), default=0.0)
        if self.next_observe and window > 0:
            ends = asyncio.get_running_loop().time() + window  # the last unit just started
            warm = asyncio.create_task(self._warm(self.next_observe, ends), name="warm-observe")
        if self.converged is not None:
            self.stage_converged()
        try:
            async with asyncio.TaskGroup() as tg:
                for gate in units:
                    tg.create_task(self._healthy(gate), name=f"health-{gate.unit}")
        except* UnitFailed as eg:
            first = eg.exceptions[0]
            assert isinstance(first, UnitFailed)
            raise Abort(
                Failure(first.unit, first.state, first.detail), str(first).splitlines()[0]
            ) from None
        finally:
            if warm is not None:
                warm.cancel()
                await asyncio.wait([warm])  # never raises the task's own error or cancellation
                if not warm.cancelled():
                    warm.exception()
        return "healthy"

    def stage_converged(self) -> asyncio.Task[files.Staged]:
        """Write the inventory of a converged apply, not yet in place (see _apply).

        The gate mostly waits (its settle window); the inventory's serialisation and fsync
        fit in there. Only ``commit`` (rename, fsync of the directory) waits for the gate:
        until then the inventory on disk still holds the pending marker. Staged before
        the gate's verdict, it says every gated unit came up; the engine stages again in
        the rare case that a condition skipped one.
        """
        if self.staging is None:
            assert self.converged is not None
            spec, before, ran = self.converged
            ran = {**ran, **dict.fromkeys(self.gate_skipped, Ran.SKIPPED)}
            inv = applied.from_spec(spec, updated_at=time.time(), ran=ran, before=before)
            self.staging = asyncio.create_task(
                asyncio.to_thread(self.store.stage, inv), name="stage-inventory"
            )
        return self.staging

    def drop_staged(self, *, keep_target: bool = False) -> None:
        """Forget the staged inventory (and, unless ``keep_target``, what it was for); a
        staged temp file is removed once written."""
        task, self.staging = self.staging, None
        if not keep_target:
            self.converged = None
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
        except OSError as e:
            # a full disk, an I/O error, permissions: the node's fault, not the revision's.
            # No rollback (it would hit the same wall): the pending marker stays, and the
            # next pass, once the node can, finishes the job as after a crash.
            fault = files.node_fault(e, P.describe(a))
            if fault is not None:
                raise fault from e
            raise Abort(None, f"{P.describe(a)}: {e}") from e

    async def _one_unguarded(self, a: P.Action) -> str:
        sd = self.systemd
        match a:
            case P.StopUnit():
                result = await sd.stop(a.unit, alone=a.alone)
                if a.reset_failed:
                    await sd.reset_failed(a.unit)
                return result
            case P.WriteUnit():
                return str(
                    await asyncio.to_thread(
                        files.write_atomic, self.observer.unit_dir / a.unit, a.content, 0o644
                    )
                )
            case P.WriteFile():
                return str(
                    await asyncio.to_thread(
                        files.write_atomic, self.observer.file_path(a.path), a.content, a.mode
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
                if await self._ran_already(a.unit):
                    return "done (already started as a dependency)"
                return await self._job(a.unit, "start", sd.start)
            case P.DeleteUnit():
                gone = await asyncio.to_thread(files.remove, self.observer.unit_dir / a.unit)
                return "removed" if gone else "absent"
            case P.DeleteFile():
                gone = await asyncio.to_thread(files.remove, self.observer.file_path(a.path))
                return "removed" if gone else "absent"
            case P.Verify():
                return await self._verify(a.units)
            case P.MaskUnit():
                await sd.mask([a.unit])
                return "done"
            case P.AdoptUnit() | P.AdoptFile():
                return "recorded"  # in the pending marker, saved before the first action
            case P.EnableUnit() | P.DisableUnit():  # batched by _execute; kept for completeness
                await (sd.enable if isinstance(a, P.EnableUnit) else sd.disable)([a.unit])
                return "done"
        raise AssertionError(f"unknown action {a!r}")

    def _step(self, i: int, n: int, a: P.Action, batch: int = 1) -> None:
        """Say which step starts: a log line for unit jobs and gates, the progress hook."""
        text = f"{i + 1}/{n} {step_text(a, batch)}"
        if isinstance(a, P.StartUnit | P.RestartUnit | P.ReloadUnit | P.StopUnit):
            self.log.info("unit", step=f"{i + 1}/{n}", action=a.VERB, unit=a.unit)
        elif isinstance(a, P.Verify):
            self.log.info("gate.wait", step=f"{i + 1}/{n}", units=[g.unit for g in a.units],
                          timeout=max((g.timeout for g in a.units), default=0))  # fmt: skip
        if self.on_progress is not None:
            self.on_progress(text)

    async def _ran_already(self, unit: str) -> bool:
        """Started since the plan began, pulled in by another unit's start: starting it
        again would run a plain oneshot twice in one apply, and a target's start runs
        every finished oneshot it wants again."""
        if self.systemd.job_done_since(unit, self._job_mark) != "done":
            return False
        st = (await self.systemd.status([unit], need_reload=False)).get(unit)
        if st is None or st.active_state == "failed":
            return False
        kind = unittypes.kind_of(unit, st.service_type, st.remain_after_exit)
        return st.active_state in unittypes.RUNNING or kind is Kind.ONESHOT

    async def execute(self, plan: P.Plan, done: list[ActionResult]) -> None:
        self._job_mark = self.systemd.job_serial
        i = 0
        while i < len(plan):
            a = plan[i]
            t0 = time.perf_counter()
            kind = type(a)
            self._step(i, len(plan), a, _batch_len(plan, i))
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
                batch = []
                while i < len(plan) and type(plan[i]) is kind:
                    batch.append(plan[i])
                    i += 1
                names = [b.unit for b in batch if isinstance(b, P.EnableUnit | P.DisableUnit)]
                if kind is P.DisableRemoved:  # the plan's daemon-reload follows the deletes
                    await self.systemd.disable(names, reload=False)
                else:
                    await (self.systemd.enable if kind is P.EnableUnit else self.systemd.disable)(
                        names
                    )
                dt = time.perf_counter() - t0
                for b in batch:
                    done.append(ActionResult(b, "done", dt))
                    self._after(b, "done")
                continue
            try:
                result = await self._one(a)
            except Abort as e:
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
