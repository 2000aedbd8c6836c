"""The inventory: what swarmkeeper last applied to this node, as plain frozen values.

The planner reads it (pure) to know which units and files are ours and what is running; the
apply engine keeps it on disk (``reconciler/actuators/inventory.py``). It holds the full
content of every unit and file, so a rollback can restore the last good state without git.
``pending`` is written before an apply touches anything: what it was about to adopt and why,
so a run killed midway is finished (or rolled back) by the next one.

A unit or file that existed before swarmkeeper managed it keeps an ``Original`` for as long
as it is managed: its content (or that systemd ran a vendor definition from another unit
directory), mode, and whether it was active, enabled or masked. A rollback of the apply that
adopted it, and a later prune, give exactly that back.
"""

from __future__ import annotations

from collections.abc import Mapping
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
from reconciler.plan.unittypes import Ran


@dataclass(frozen=True, slots=True)
class Original:
    """What an adopted unit or file was before swarmkeeper wrote it."""

    content: bytes | None = field(default=None, repr=False)  # None: no file of its own there
    mode: int = 0o644
    vendor: bool = False  # systemd ran a definition from another unit directory
    digest: str = ""  # of the definition systemd ran (content or the vendor file); "" unknown
    active: bool = False
    enabled: bool = False
    masked: bool = False

    def describe(self) -> str:
        if self.masked and not self.vendor:
            return "masked"  # a link to /dev/null: neither content nor state of its own
        what = "vendor definition" if self.vendor else "own file"
        flags = [f for f, on in (("active", self.active), ("enabled", self.enabled),
                                 ("masked", self.masked)) if on]  # fmt: skip
        return ", ".join([what, *flags])


@dataclass(frozen=True, slots=True)
class AppliedUnit:
    name: UnitName
    content: bytes
    on_change: OnChange = OnChange.RESTART
    enable: bool | None = None
    timeout: float = 30.0
    settle: float | None = None  # None: the engine's default window
    ran: Ran = Ran.UP  # the inventory is saved only after the gate passed
    original: Original | None = None  # adopted: what it was before
    digest: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", sha256(self.content))


@dataclass(frozen=True, slots=True)
class AppliedFile:
    path: str
    content: bytes
    mode: int = 0o644
    original: Original | None = None  # adopted: what it was before
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
    # What an adopted name was before we wrote it (someone else's unit or file), so a
    # rollback can give it back exactly.
    adopted_units: tuple[tuple[UnitName, Original], ...] = ()
    adopted_files: tuple[tuple[str, Original], ...] = ()


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

    def original_unit(self, name: str) -> Original | None:
        """What an adopted unit was (from the inventory, or the apply adopting it now)."""
        u = self._units.get(name)
        if u is not None:
            return u.original
        return dict[str, Original](self.pending.adopted_units).get(name) if self.pending else None

    def original_file(self, path: str) -> Original | None:
        f = self._files.get(path)
        if f is not None:
            return f.original
        return dict(self.pending.adopted_files).get(path) if self.pending else None

    def managed_files(self) -> tuple[str, ...]:
        paths = [f.path for f in self.files]
        if self.pending:
            paths += [p for p in self.pending.files if p not in paths]
        return tuple(paths)


def from_spec(
    spec: NodeSpec,
    *,
    updated_at: float = 0.0,
    ran: Mapping[str, Ran] | None = None,
    before: Inventory | None = None,
) -> Inventory:
    """The inventory after ``spec`` was applied successfully.

    ``ran``: what the apply saw of each unit's start (default: up); ``before``: the
    inventory it started from, whose adoption records (``Original``) carry over.
    """
    ran = ran or {}
    prev = before or EMPTY
    return Inventory(
        revision=spec.revision,
        units=tuple(
            AppliedUnit(
                u.name,
                u.content,
                u.on_change,
                u.enable,
                u.timeout,
                u.settle,
                ran.get(u.name, Ran.UP),
                prev.original_unit(u.name),
            )
            for u in spec.units
        ),
        files=tuple(
            AppliedFile(f.path, f.content, f.mode, prev.original_file(f.path)) for f in spec.files
        ),
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
