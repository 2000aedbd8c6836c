"""A pure, in-memory model of one node for planner tests: unit files, files, systemd's state.

It executes a ``Plan`` the way systemd and the apply engine would, and it is strict where a
real node would silently misbehave: starting a unit whose file changed since the last
daemon-reload, or enabling a unit that has no file, fails the test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from reconciler.models import sha256
from reconciler.plan import planner as P
from reconciler.plan import unitfile


@dataclass
class Running:
    content: bytes  # the unit content it was (re)started or reloaded with
    env: dict[str, bytes]  # contents of the files it references, at that moment


@dataclass
class Node:
    unit_files: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    loaded: dict[str, bytes] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)
    running: dict[str, Running] = field(default_factory=dict)
    enabled: set[str] = field(default_factory=set)
    invocations: dict[str, int] = field(default_factory=dict)
    mutations: int = 0

    def observe(self) -> P.Observed:
        names = set(self.unit_files) | set(self.loaded) | set(self.active)
        units = {}
        for n in names:
            units[n] = P.UnitState(
                load_state="loaded" if n in self.loaded else "not-found",
                active_state=self.active.get(n, "inactive"),
                unit_file_state=(
                    ("enabled" if n in self.enabled else "disabled") if n in self.unit_files else ""
                ),
                invocation_id=str(self.invocations.get(n, "")),
                need_daemon_reload=n in self.loaded and self.loaded[n] != self.unit_files.get(n),
            )
        return P.Observed(
            unit_files={n: sha256(c) for n, c in self.unit_files.items()},
            files={p: P.FileState(sha256(c), m) for p, (c, m) in self.files.items()},
            units=units,
        )

    def _run(self, name: str) -> None:
        assert name in self.unit_files, f"{name}: no unit file"
        assert self.loaded.get(name) == self.unit_files[name], f"{name}: daemon-reload missing"
        refs = unitfile.referenced_paths(self.loaded[name])
        self.active[name] = "active"
        self.running[name] = Running(
            self.loaded[name], {p: self.files[p][0] for p in refs if p in self.files}
        )
        self.invocations[name] = self.invocations.get(name, 0) + 1

    def execute(self, plan: P.Plan, *, whole: bool = True) -> None:
        """Run ``plan`` (``whole=False``: a plan cut short, as by a killed process)."""
        phases = [a.PHASE for a in plan]
        assert phases == sorted(phases, key=P.PHASES.index), "actions out of phase order"
        for a in plan:
            if not isinstance(
                a, P.WriteFile | P.WriteUnit | P.DeleteFile | P.DeleteUnit | P.Verify
            ):
                self.mutations += 1
            match a:
                case P.StopUnit(unit=n):
                    self.active[n] = "inactive"
                    self.running.pop(n, None)
                case P.WriteUnit(unit=n, content=c):
                    self.unit_files[n] = c
                case P.WriteFile(path=p, content=c, mode=m):
                    self.files[p] = (c, m)
                case P.DaemonReload():
                    self.loaded = dict(self.unit_files)
                case P.ReloadUnit(unit=n):
                    assert self.active.get(n) == "active", f"reload of inactive {n}"
                    inv = self.invocations[n]
                    self._run(n)
                    self.invocations[n] = inv  # a reload keeps the same invocation
                case P.RestartUnit(unit=n) | P.StartUnit(unit=n):
                    self._run(n)
                case P.EnableUnit(unit=n):
                    assert n in self.unit_files, f"enable {n} without a file"
                    self.enabled.add(n)
                case P.DisableUnit(unit=n):
                    self.enabled.discard(n)
                case P.DeleteUnit(unit=n):
                    del self.unit_files[n]
                case P.DeleteFile(path=p):
                    del self.files[p]
                case P.Verify(units=units):
                    for n, *_ in units:
                        assert self.active.get(n) == "active", f"{n} not healthy"
                case P.MaskUnit(unit=n):
                    self.unit_files.pop(n, None)
                case P.AdoptUnit() | P.AdoptFile():
                    pass  # recorded in the pending marker; nothing on the node changes
        stale = set(self.loaded) - set(self.unit_files)
        assert not whole or not stale, f"{sorted(stale)}: deleted without a daemon-reload"
