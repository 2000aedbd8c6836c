"""The inventory on disk: ``<state-dir>/inventory.json``, written atomically.

It records what swarmkeeper applied (revision, every unit's and file's content, digest and
settings) so the planner knows what is ours and a rollback can restore the last good state
without git, plus the ``pending`` marker an apply writes before it touches anything.
A missing file is an empty inventory (a fresh node); a file that does not parse is an error
that says so, never silently treated as empty: that would make swarmkeeper forget (and so
never prune) units it created.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from reconciler.actuators.files import Staged, node_fault, stage
from reconciler.errors import ActuatorError, NodeBusy, SwarmkeeperError
from reconciler.models import OnChange, Revision, UnitName
from reconciler.plan.applied import EMPTY, AppliedFile, AppliedUnit, Inventory, Original, Pending
from reconciler.plan.unittypes import Ran

FILENAME = "inventory.json"
VERSION = 1
_PID_BYTES = 16  # the lock file's content: the holder's pid, a newline, spaces


class CorruptInventory(ActuatorError):
    """The inventory file exists but cannot be read."""


def _content_out(data: bytes) -> dict[str, str]:
    try:
        return {"content": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"content_b64": base64.b64encode(data).decode("ascii")}


def _content_in(d: dict[str, Any]) -> bytes:
    if "content_b64" in d:
        return base64.b64decode(d["content_b64"], validate=True)
    text = d["content"]
    if not isinstance(text, str):
        raise TypeError("content must be a string")
    return text.encode("utf-8")


def _original_out(o: Original | None) -> dict[str, Any] | None:
    if o is None:
        return None
    out: dict[str, Any] = {
        "mode": f"{o.mode:04o}",
        "vendor": o.vendor,
        "digest": o.digest,
        "active": o.active,
        "enabled": o.enabled,
        "masked": o.masked,
    }
    if o.content is not None:
        out.update(_content_out(o.content))
    return out


def _original_in(d: dict[str, Any] | None) -> Original | None:
    if d is None:
        return None
    content = _content_in(d) if "content" in d or "content_b64" in d else None
    return Original(
        content,
        int(d.get("mode", "0644"), 8),
        bool(d.get("vendor", False)),
        str(d.get("digest", "")),
        bool(d.get("active", False)),
        bool(d.get("enabled", False)),
        bool(d.get("masked", False)),
    )


def _legacy_adopted(p: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """Adoption records of a pending marker written before ``Original`` existed."""
    active, enabled = set(p.get("originally_active", [])), set(p.get("originally_enabled", []))
    units = [
        (UnitName(u["name"]), Original(_content_in(u), active=u["name"] in active,
                                       enabled=u["name"] in enabled))
        for u in p.get("original_units", [])
    ]  # fmt: skip
    files = [
        (f["path"], Original(_content_in(f), int(f["mode"], 8)))
        for f in p.get("original_files", [])
    ]
    return units, files


def dumps(inv: Inventory) -> bytes:
    doc: dict[str, Any] = {
        "version": VERSION,
        "revision": inv.revision,
        "updated_at": inv.updated_at,
        "failed_revision": inv.failed_revision,
        "units": [
            {
                "name": u.name,
                "digest": u.digest,
                "on_change": str(u.on_change),
                "enable": u.enable,
                "timeout": u.timeout,
                "settle": u.settle,
                "ran": str(u.ran),
                "original": _original_out(u.original),
                **_content_out(u.content),
            }
            for u in inv.units
        ],
        "files": [
            {
                "path": f.path,
                "digest": f.digest,
                "mode": f"{f.mode:04o}",
                "original": _original_out(f.original),
                **_content_out(f.content),
            }
            for f in inv.files
        ],
        "pending": None
        if inv.pending is None
        else {
            "revision": inv.pending.revision,
            "units": list(inv.pending.units),
            "files": list(inv.pending.files),
            "actions": list(inv.pending.actions),
            "started_at": inv.pending.started_at,
            "adopted_units": [
                {"name": n, "original": _original_out(o)} for n, o in inv.pending.adopted_units
            ],
            "adopted_files": [
                {"path": f, "original": _original_out(o)} for f, o in inv.pending.adopted_files
            ],
        },
    }
    return _json_lines(doc).encode()


def _json_lines(doc: dict[str, Any]) -> str:
    """Like ``json.dumps(doc, indent=1, sort_keys=True)``, but one line per unit or file.

    Still readable, and 3x faster (50 units: 0.8 -> 0.26 ms, twice per apply, the first
    before anything is touched): ``indent`` makes json use its pure-Python encoder.
    """
    enc = _ENCODER.encode
    out = []
    for key in sorted(doc):
        value = doc[key]
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            entries = ",\n  ".join(map(enc, value))
            out.append(f" {enc(key)}: [\n  {entries}\n ]")
        else:
            out.append(f" {enc(key)}: {enc(value)}")
    return "{\n" + ",\n".join(out) + "\n}\n"


_ENCODER = json.JSONEncoder(sort_keys=True)  # one, not one per json.dumps(..., sort_keys=True)


def loads(data: bytes) -> Inventory:
    doc = json.loads(data)
    if doc.get("version") != VERSION:
        raise ValueError(f"unknown version {doc.get('version')!r}")
    units = []
    for u in doc["units"]:
        settle = u.get("settle")  # absent in inventories written before it existed
        unit = AppliedUnit(
            UnitName(u["name"]),
            _content_in(u),
            OnChange(u["on_change"]),
            u["enable"],
            float(u["timeout"]),
            None if settle is None else float(settle),
            Ran(u.get("ran", "up")),  # older inventories: saved only after a passing gate
            _original_in(u.get("original")),
        )
        if unit.digest != u["digest"]:
            raise ValueError(f"unit {unit.name}: content does not match its digest")
        units.append(unit)
    files = []
    for f in doc["files"]:
        file = AppliedFile(
            f["path"], _content_in(f), int(f["mode"], 8), _original_in(f.get("original"))
        )
        if file.digest != f["digest"]:
            raise ValueError(f"file {file.path}: content does not match its digest")
        files.append(file)
    p = doc["pending"]
    pending = None
    if p is not None:
        if "adopted_units" in p:
            adopted_units = [
                (UnitName(a["name"]), _original_in(a["original"])) for a in p["adopted_units"]
            ]
            adopted_files = [(a["path"], _original_in(a["original"])) for a in p["adopted_files"]]
        else:
            adopted_units, adopted_files = _legacy_adopted(p)
        pending = Pending(
            Revision(p["revision"]),
            tuple(UnitName(n) for n in p["units"]),
            tuple(p["files"]),
            tuple(p["actions"]),
            float(p["started_at"]),
            tuple((n, o) for n, o in adopted_units if o is not None),
            tuple((f, o) for f, o in adopted_files if o is not None),
        )
    rev = doc["revision"]
    failed = doc.get("failed_revision")
    return Inventory(
        revision=Revision(rev) if rev is not None else None,
        units=tuple(units),
        files=tuple(files),
        pending=pending,
        failed_revision=Revision(failed) if failed else None,
        updated_at=float(doc.get("updated_at", 0.0)),
    )


class InventoryStore:
    """Reads and atomically replaces ``<state_dir>/inventory.json``.

    It remembers the bytes it last read or wrote and the inventory they hold: a load that
    reads the same bytes again (two per pass, most passes) returns that inventory instead of
    parsing it and hashing every unit's content again. The bytes are compared, not a stat:
    whoever wrote the file since, and however, a load returns what the file holds now.
    """

    def __init__(self, state_dir: Path) -> None:
        self.path = Path(state_dir) / FILENAME
        self._known: tuple[bytes, Inventory] | None = None  # the file's bytes and their meaning
        self._staged: tuple[Staged, bytes, Inventory] | None = None  # the last stage()
        self._lock_path = self.path.with_name("apply.lock")
        self._lock_fd: int | None = None
        self._lock_closer: Callable[[], object] = lambda: None  # closes _lock_fd

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """Hold ``<state_dir>/apply.lock`` (``flock``) for one apply, or raise ``NodeBusy``.

        The agent and an operator's ``swarmkeeper apply`` on the same node would otherwise
        interleave their plans and overwrite each other's inventory. The kernel drops the
        lock with its holder, so a killed apply never leaves it behind (the next run then
        finishes or undoes it from the pending marker). The file stays open between applies
        (unlocked): creating, truncating and closing it cost ~0.15 ms of CPU per apply."""
        fd = self._lock_file()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise NodeBusy(
                f"another swarmkeeper apply is running on this node (pid {holder}, "
                f"{self._lock_path}); try again once it has finished"
            ) from None
        try:
            # only to name the holder; padded so a shorter pid leaves no digits behind
            os.pwrite(fd, f"{os.getpid()}\n".ljust(_PID_BYTES).encode(), 0)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _lock_file(self) -> int:
        """The open lock file; opened again if the path no longer names it (removed)."""
        path = self._lock_path
        if self._lock_fd is not None:
            try:
                here, mine = os.stat(path), os.fstat(self._lock_fd)
                if (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
                    return self._lock_fd
            except FileNotFoundError:
                pass
            self._lock_closer()
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self._lock_fd = fd
        self._lock_closer = weakref.finalize(self, os.close, fd)
        return fd

    def load(self) -> Inventory:
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return EMPTY
        known = self._known
        if known is not None and known[0] == data:
            return known[1]
        try:
            inv = loads(data)
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise CorruptInventory(
                f"{self.path}: corrupt inventory ({type(e).__name__}: {e}); move it aside to "
                "start over: swarmkeeper then adopts desired units and forgets removed ones"
            ) from e
        self._known = (data, inv)
        return inv

    def save(self, inv: Inventory) -> None:
        self.commit(self.stage(inv))

    def stage(self, inv: Inventory) -> Staged:
        """Serialise and fsync ``inv`` next to the inventory; ``commit`` makes it the one."""
        data = dumps(inv)
        try:
            staged = stage(self.path, data, 0o600)
        except OSError as e:
            raise self._unsaved(e) from e
        self._staged = (staged, data, inv)
        return staged

    def commit(self, staged: Staged) -> None:
        try:
            staged.commit()
        except OSError as e:
            raise self._unsaved(e) from e
        last = self._staged
        if last is not None and last[0] is staged:
            self._known, self._staged = (last[1], last[2]), None

    def _unsaved(self, e: OSError) -> SwarmkeeperError:
        what = f"{self.path}: cannot save the inventory"
        return node_fault(e, what) or ActuatorError(f"{what}: {e}")
