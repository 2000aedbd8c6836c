"""How the apply engine reads the node: the disk and systemd at once, then the plan.

The engine's ``Observer``: one object the engine owns and the agent reuses across passes
(its digest cache and the statuses the health gate warmed carry over). ``observe`` hashes unit files and managed files in a thread (re-hashing only
what changed) while systemd answers; ``observe_and_plan`` reads NeedDaemonReload only when
it can change the plan. ``SystemdLike`` is what the whole engine needs of
``reconciler.actuators.systemd.Systemd``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

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
            except OSError as e:
                raise files.node_fault(e, f"cannot read {up}") or e from e
        found: dict[str, P.FileState] = {}
        for p in paths:
            fp = self.file_path(p)
            looked.add(fp)
            try:
                found[p] = P.FileState(*self._digests.read(fp))
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                continue
            except OSError as e:
                raise files.node_fault(e, f"cannot read {fp}") or e from e
        self._digests.keep(looked)
        return unit_files, found

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
        names, paths = self._where(spec, inv)
        disk = asyncio.create_task(
            asyncio.to_thread(self._read_disk, names, paths), name="observe-disk"
        )
        try:
            statuses = await self.systemd.status(self.systemd_names(names))
        finally:
            unit_files, found = await disk
        return P.Observed(unit_files=unit_files, files=found, units=_unit_states(statuses))

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
        names, paths = self._where(spec, inv)
        disk = asyncio.create_task(
            asyncio.to_thread(self._read_disk, names, paths), name="observe-disk"
        )
        try:
            statuses = await self.systemd.status(self.systemd_names(names), need_reload=False)
        finally:
            unit_files, found = await disk
        observed = P.Observed(unit_files=unit_files, files=found, units=_unit_states(statuses))
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
        caller just read (a pass reads it anyway), so it is not read twice."""
        return (await self.observe_and_plan(spec, inv if inv is not None else self.inventory()))[1]
