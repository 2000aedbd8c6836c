"""A dry systemd: records what it is asked to do in a directory instead of running units.

For ``bench/converge.py`` and ``swarmkeeper agent --actuator dry``, where fifty agents on
two cores cannot each have a real systemd manager. It implements the engine's small
``SystemdLike`` interface: unit files are real files in ``unit_dir``, every job succeeds
at once and leaves the unit active, and each call is appended to ``calls.log``. It is never
the only test of a feature: the engine is tested against real systemd managers.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True, slots=True)
class DryStatus:
    name: str
    load_state: str = "not-found"
    active_state: str = "inactive"
    sub_state: str = "dead"
    unit_file_state: str = ""
    invocation_id: str = ""
    main_pid: int = 0
    result: str = "success"
    service_type: str = "simple"
    remain_after_exit: bool = False

    @property
    def healthy(self) -> bool:
        return self.active_state == "active"

    @property
    def failed(self) -> bool:
        return self.active_state == "failed"


class DrySystemd:
    def __init__(self, unit_dir: Path) -> None:
        self.unit_dir = unit_dir
        self.unit_dir.mkdir(parents=True, exist_ok=True)
        self.mutating_calls = 0
        self._units: dict[str, DryStatus] = {}
        self._log = unit_dir.parent / "calls.log"

    def _record(self, what: str) -> None:
        self.mutating_calls += 1
        with self._log.open("a") as f:
            f.write(what + "\n")

    async def status(
        self, names: Sequence[str], *, need_reload: bool = True
    ) -> dict[str, DryStatus]:
        out = {}
        for n in names:
            st = self._units.get(n, DryStatus(n))
            loaded = (self.unit_dir / n).exists()
            out[n] = replace(st, load_state="loaded" if loaded else "not-found")
        return out

    async def daemon_reload(self) -> None:
        self._record("daemon-reload")

    def _run(self, name: str) -> str:
        self._units[name] = DryStatus(name, "loaded", "active", "running",
                                      self._units.get(name, DryStatus(name)).unit_file_state,
                                      uuid.uuid4().hex, 1)  # fmt: skip
        return "done"

    async def start(self, name: str) -> str:
        self._record(f"start {name}")
        return self._run(name)

    async def restart(self, name: str) -> str:
        self._record(f"restart {name}")
        return self._run(name)

    async def reload(self, name: str) -> str:
        self._record(f"reload {name}")
        return "done"

    async def stop(self, name: str, *, alone: bool = False) -> str:
        self._record(f"stop {name}")
        self._units[name] = DryStatus(name, "loaded")
        return "done"

    async def enable(self, names: Sequence[str]) -> None:
        for n in names:
            self._record(f"enable {n}")
            self._units[n] = replace(self._units.get(n, DryStatus(n)), unit_file_state="enabled")

    async def disable(self, names: Sequence[str], *, reload: bool = True) -> None:
        for n in names:
            self._record(f"disable {n}")
            self._units[n] = replace(self._units.get(n, DryStatus(n)), unit_file_state="disabled")

    async def reset_failed(self, name: str) -> None:
        self._record(f"reset-failed {name}")

    async def wait_healthy(
        self,
        name: str,
        timeout: float,  # noqa: ASYNC109
        *,
        settle: float | None = None,
    ) -> DryStatus:
        return (await self.status([name]))[name]  # jobs finish at once: nothing to settle

    async def need_daemon_reload(self, names: Sequence[str]) -> dict[str, bool]:
        return dict.fromkeys(names, False)

    async def mask(self, names: Sequence[str]) -> None:
        for n in names:
            self._record(f"mask {n}")

    job_serial = 0  # jobs end at once here: nothing is ever pulled in

    def job_done_since(self, name: str, serial: int) -> str | None:
        return None

    async def fragment_paths(self, names: Sequence[str]) -> dict[str, str]:
        return dict.fromkeys(names, "")

    async def warm(self, names: Sequence[str], ends: float) -> None:
        return None  # nothing cached: status() reads the unit dir each time

    async def describe_failure(self, name: str, lines: int = 20) -> str:
        return f"{name}: dry run"

    async def close(self) -> None:
        return None
