"""The inventory: what swarmkeeper last applied to this node, as plain frozen values.

The planner reads it (pure) to know which units and files are ours and what is running; the
apply engine keeps it on disk (``reconciler/actuators/inventory.py``). It holds the full
content of every unit and file, so a rollback can restore the last good state without git.
``pending`` is written before an apply touches anything: what it was about to adopt and why,
so a run killed midway is finished (or rolled back) by the next one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.models import (
    WORKTREE,
    FileSpec,
    NodeSpec,
    OnChange,
    Revision,
    UnitName,
    UnitSpec,
    sha256,
)


@dataclass(frozen=True, slots=True)
class AppliedUnit:
    name: UnitName
    content: bytes
    on_change: OnChange = OnChange.RESTART
    enable: bool | None = None
    timeout: float = 30.0
    settle: float | None = None  # None: the engine's default window
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", sha256(self.content))


@dataclass(frozen=True, slots=True)
class AppliedFile:
    path: str
    content: bytes
    mode: int = 0o644
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", sha256(self.content))


@dataclass(frozen=True, slots=True)
class Pending:
    """An apply in progress: its target and what it adopts (names not yet in the inventory)."""

    revision: Revision
    units: tuple[UnitName, ...] = ()
    files: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()  # the plan, for people reading the state file
    started_at: float = 0.0
    # What an adopted name held before we wrote it (someone else's unit or file), so a
    # rollback can give it back exactly: content, and whether the unit ran / was enabled.
    original_units: tuple[AppliedUnit, ...] = ()
    original_files: tuple[AppliedFile, ...] = ()
    originally_active: tuple[UnitName, ...] = ()
    originally_enabled: tuple[UnitName, ...] = ()


@dataclass(frozen=True, slots=True)
class Inventory:
    revision: Revision | None = None  # None: nothing applied yet
    units: tuple[AppliedUnit, ...] = ()  # in role order
    files: tuple[AppliedFile, ...] = ()
    pending: Pending | None = None
    failed_revision: Revision | None = None  # the last revision that rolled back
    updated_at: float = 0.0
    _units: dict[str, AppliedUnit] = field(init=False, repr=False, compare=False)
    _files: dict[str, AppliedFile] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_units", {u.name: u for u in self.units})
        object.__setattr__(self, "_files", {f.path: f for f in self.files})

    def unit(self, name: str) -> AppliedUnit | None:
        return self._units.get(name)

    def file(self, path: str) -> AppliedFile | None:
        return self._files.get(path)

    def managed_units(self) -> tuple[UnitName, ...]:
        """Ours: applied units plus those an unfinished apply was adopting, in order."""
        names = [u.name for u in self.units]
        if self.pending:
            names += [n for n in self.pending.units if n not in names]
        return tuple(names)

    def managed_files(self) -> tuple[str, ...]:
        paths = [f.path for f in self.files]
        if self.pending:
            paths += [p for p in self.pending.files if p not in paths]
        return tuple(paths)


def from_spec(spec: NodeSpec, *, updated_at: float = 0.0) -> Inventory:
    """The inventory after ``spec`` was applied successfully."""
    return Inventory(
        revision=spec.revision,
        units=tuple(
            AppliedUnit(u.name, u.content, u.on_change, u.enable, u.timeout, u.settle)
            for u in spec.units
        ),
        files=tuple(AppliedFile(f.path, f.content, f.mode) for f in spec.files),
        updated_at=updated_at,
    )


def to_spec(inv: Inventory, like: NodeSpec) -> NodeSpec:
    """The last good state as a NodeSpec (the rollback target); node facts come from ``like``."""
    return NodeSpec(
        node=like.node,
        role=like.role,
        revision=inv.revision or WORKTREE,
        cluster=like.cluster,
        units=tuple(
            UnitSpec(u.name, u.content, u.on_change, u.enable, u.timeout, settle=u.settle)
            for u in inv.units
        ),
        files=tuple(FileSpec(f.path, f.content, f.mode) for f in inv.files),
        env_path=like.env_path,
    )


EMPTY = Inventory()
