"""How the apply engine reads the node: the disk and systemd at once, then the plan.

The engine's ``Observer``: one object the engine owns and the agent reuses across passes
(its digest cache and the statuses the health gate warmed carry over). ``observe`` stats
unit files and managed files and hashes only what changed since (in a thread, while systemd
answers, when that is much); ``observe_and_plan`` reads NeedDaemonReload only when it can
change the plan. The plan ``plan`` made is what an apply that follows within
``REUSE_WITHIN`` executes, unless anything it was made from changed. ``SystemdLike`` is what
the whole engine needs of ``reconciler.actuators.systemd.Systemd``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

from reconciler.actuators import files
from reconciler.actuators.inventory import InventoryStore
from reconciler.models import NodeSpec
from reconciler.plan import applied, unitfile
from reconciler.plan import planner as P


class SystemdLike(Protocol):
    """What the engine needs of ``reconciler.actuators.systemd.Systemd``."""

    unit_dir: Path
    mutating_calls: int
    job_serial: int

    async def status(self, names: Sequence[str], *, need_reload: bool = True) -> dict[str, Any]: ...
    async def daemon_reload(self) -> None: ...
    async def start(self, name: str) -> str: ...
    async def stop(self, name: str, *, alone: bool = False) -> str: ...
    async def restart(self, name: str) -> str: ...
    async def reload(self, name: str) -> str: ...
    async def enable(self, names: Sequence[str]) -> None: ...
    async def disable(self, names: Sequence[str], *, reload: bool = True) -> None: ...
    async def mask(self, names: Sequence[str]) -> None: ...
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
    async def fragment_paths(self, names: Sequence[str]) -> dict[str, str]: ...
    def job_done_since(self, name: str, serial: int) -> str | None: ...


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
            getattr(st, "skipped", False),
        )
        for n, st in statuses.items()
    }


_T = TypeVar("_T")
REUSE_WITHIN = 1.0  # seconds an apply may execute the plan just made (take_plan)
INLINE_HASH_BYTES = 256 * 1024  # more than this to hash goes to a thread (~0.3 ms of sha256)
_UNIT, _FILE = "unit", "file"


@dataclass(slots=True)
class _Disk:
    """What one observe read of the disk: digests of unit files, digests and modes of files."""

    units: dict[str, str] = field(default_factory=dict)
    files: dict[str, P.FileState] = field(default_factory=dict)
    todo: list[tuple[str, str, Path, os.stat_result]] = field(default_factory=list)  # to hash
    todo_bytes: int = 0

    def add(self, kind: str, name: str, seen: tuple[str, int]) -> None:
        if kind is _UNIT:
            self.units[name] = seen[0]
        else:
            self.files[name] = P.FileState(*seen)


def _probe(kind: str, path: Path, read: Callable[[Path], _T]) -> _T | None:
    """``read(path)``; None when there is nothing there (for a managed file, also a
    directory, or a path through a file); a NodeFault for what the node is to blame for."""
    try:
        return read(path)
    except FileNotFoundError:
        return None
    except (IsADirectoryError, NotADirectoryError) as e:
        if kind is _FILE:
            return None
        raise files.node_fault(e, f"cannot read {path}") or e from e
    except OSError as e:
        raise files.node_fault(e, f"cannot read {path}") or e from e


@dataclass(frozen=True, slots=True)
class _Planned:
    spec: NodeSpec
    inv: applied.Inventory
    observed: P.Observed
    plan: P.Plan
    at: float  # time.monotonic() when planned
    calls: int  # the actuator's mutating_calls then


class Observer:
    """The engine's reading side: the node's units, files and inventory, and the plan."""

    def __init__(
        self, systemd: SystemdLike, store: InventoryStore, *, root: Path | None, unit_dir: Path
    ) -> None:
        self.systemd = systemd
        self.store = store
        self.root = root
        self.unit_dir = unit_dir
        self.root_str = str(root) if root is not None else ""
        self._digests = files.Digests()  # observe re-hashes only files whose stat changed
        self._planned: _Planned | None = None  # the last plan(), for take_plan

    def file_path(self, path: str) -> Path:
        return self.root / path.lstrip("/") if self.root is not None else Path(path)

    # -- observe ---------------------------------------------------------------------------

    def _scan(self, names: Sequence[str], paths: Sequence[str]) -> _Disk:
        """Stat the unit files and managed files; a digest whose stat is unchanged is known."""
        disk = _Disk()
        looked = set()
        for kind, items in ((_UNIT, names), (_FILE, paths)):
            for name in items:
                path = self.unit_dir / name if kind is _UNIT else self.file_path(name)
                looked.add(path)
                found = _probe(kind, path, self._digests.lookup)
                if found is None:
                    continue
                seen, st = found
                if seen is None:
                    disk.todo.append((kind, name, path, st))
                    disk.todo_bytes += st.st_size
                else:
                    disk.add(kind, name, seen)
        self._digests.keep(looked)
        return disk

    def _hash(self, disk: _Disk) -> None:
        """Hash what ``_scan`` did not know (a file written or touched since)."""
        for kind, name, path, st in disk.todo:
            seen = _probe(kind, path, functools.partial(self._digests.hash, st=st))
            if seen is not None:
                disk.add(kind, name, seen)
        disk.todo = []

    async def _read(
        self, names: Sequence[str], paths: Sequence[str], *, need_reload: bool
    ) -> tuple[_Disk, dict[str, Any]]:
        """The disk and systemd's statuses of ``names``.

        The stats, and the hashing of what changed while it is small, run right here:
        microseconds, where a hop to a worker thread costs ~130 µs of CPU. More than
        ``INLINE_HASH_BYTES`` to hash goes to a thread, while systemd answers."""
        disk = self._scan(names, paths)
        task = None
        if disk.todo_bytes > INLINE_HASH_BYTES:
            task = asyncio.create_task(asyncio.to_thread(self._hash, disk), name="observe-disk")
        else:
            self._hash(disk)
        try:
            statuses = await self.systemd.status(self.systemd_names(names), need_reload=need_reload)
        finally:
            if task is not None:
                await task
        return disk, statuses

    @staticmethod
    def unit_names(spec: NodeSpec, inv: applied.Inventory) -> list[str]:
        return list(dict.fromkeys([*spec.unit_names, *inv.managed_units()]))

    @staticmethod
    def systemd_names(names: Sequence[str]) -> list[str]:
        """What systemd is asked about: the units, and for a drop-in the unit it configures."""
        return list(dict.fromkeys(unitfile.dropin_parent(n) or n for n in names))

    def _where(self, spec: NodeSpec, inv: applied.Inventory) -> tuple[list[str], list[str]]:
        names = self.unit_names(spec, inv)
        paths = list(dict.fromkeys([*(f.path for f in spec.files), *inv.managed_files()]))
        return names, paths

    async def observe(self, spec: NodeSpec, inv: applied.Inventory) -> P.Observed:
        """The node now: the disk and systemd read at the same time."""
        disk, statuses = await self._read(*self._where(spec, inv), need_reload=True)
        return P.Observed(unit_files=disk.units, files=disk.files, units=_unit_states(statuses))

    async def observe_and_plan(
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
        disk, statuses = await self._read(*self._where(spec, inv), need_reload=False)
        unit_files = disk.units
        observed = P.Observed(unit_files=unit_files, files=disk.files, units=_unit_states(statuses))
        observed = await self._with_vendor(spec, inv, observed)
        writes = any(unit_files.get(u.name) != u.digest for u in spec.units)
        if not writes:
            observed = await self._with_need_reload(observed)
        p = P.plan(spec, observed, inv, root=self.root_str)
        if not writes or any(isinstance(a, P.DaemonReload) for a in p):
            return observed, p
        stale = await self._with_need_reload(observed)
        return (
            (observed, p)
            if stale == observed
            else (stale, P.plan(spec, stale, inv, root=self.root_str))
        )

    async def _with_vendor(
        self, spec: NodeSpec, inv: applied.Inventory, observed: P.Observed
    ) -> P.Observed:
        """Add the digest of vendor definitions the spec is about to override (adoption).

        Only desired units that are not ours, have no file in the unit directory and that
        systemd loads anyway: none on a converged node, so no call there.
        """
        managed = set(inv.managed_units())
        names = [
            n
            for n in spec.unit_names
            if n not in managed
            and n not in observed.unit_files
            and observed.units.get(n, P.UnitState()).load_state not in ("not-found", "masked")
        ]
        if not names:
            return observed
        paths = await self.systemd.fragment_paths(names)

        def digests() -> dict[str, str]:
            out = {}
            for n, p in paths.items():
                try:
                    out[n] = (files.digest(Path(p)) or "") if p else ""
                except OSError:
                    out[n] = ""
            return out

        return replace(observed, vendor=await asyncio.to_thread(digests))

    async def _with_need_reload(self, observed: P.Observed) -> P.Observed:
        loaded = [n for n, st in observed.units.items() if st.load_state != "not-found"]
        stale = {n for n, v in (await self.systemd.need_daemon_reload(loaded)).items() if v}
        if not stale:
            return observed
        units = {n: replace(st, need_daemon_reload=n in stale) for n, st in observed.units.items()}
        return replace(observed, units=units)

    def inventory(self) -> applied.Inventory:
        return self.store.load()

    async def plan(self, spec: NodeSpec, inv: applied.Inventory | None = None) -> P.Plan:
        """Exactly the plan ``apply(spec)`` would execute now. ``inv``: the inventory the
        caller just read (a pass reads it anyway), so it is not read twice. Remembered for
        ``take_plan``."""
        inv = inv if inv is not None else self.inventory()
        observed, p = await self.observe_and_plan(spec, inv)
        self._planned = _Planned(spec, inv, observed, p, time.monotonic(),
                                 self.systemd.mutating_calls)  # fmt: skip
        return p

    def take_plan(self, spec: NodeSpec, inv: applied.Inventory) -> tuple[P.Observed, P.Plan] | None:
        """What the last ``plan`` observed and planned, if it was for this very ``spec`` and an
        equal inventory, less than ``REUSE_WITHIN`` ago, with no systemd call of ours since
        (the engine writes files only while it applies, and an apply takes it); else None.

        A pass plans, then takes its rollout slot, then applies: observing and planning the
        same node again a few milliseconds later (a D-Bus round of status reads with
        systemd; about 1 ms of the agent's CPU even with the dry actuator) would only
        narrow a window the apply has anyway: whatever changes after its own observe is
        the next pass's drift. A long wait for a slot outlasts the window and observes
        again. Once: the apply after that observes for itself."""
        last, self._planned = self._planned, None
        if (
            last is None
            or last.spec is not spec
            or (last.inv is not inv and last.inv != inv)
            or last.calls != self.systemd.mutating_calls
            or time.monotonic() - last.at > REUSE_WITHIN
        ):
            return None
        return last.observed, last.plan
