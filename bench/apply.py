"""Apply 50 units to a real systemd user manager: first apply, no-op pass, one-unit change.

In the same run, a raw baseline on a second, identical manager: plain file copies of all 50
unit files + one ``systemctl --user daemon-reload`` + one ``systemctl --user restart`` of the
changed unit (and, for the first apply, + one ``systemctl --user start`` of all 50).
Prints medians and the ratio to the baseline. Targets: no-op pass under 50 ms;
one-unit change within 1.5x of the raw baseline.

The health gate wants a Type=simple unit to have been active for a settle time (default
0.1 s, from the actuator; a unit entry's ``settle:`` overrides it) to catch a unit that
crashes right after spawning; the raw baseline checks nothing. The one-unit change is
printed with the default settle (the target), with the former default 0.3 s, and with
settle=0 (gate = "active"), each with where its time goes. While the gate waits, the engine reads the statuses the next
pass needs (systemd's per-unit UnitFileState recomputation after a reload), so with a window
that cost leaves the observe; with settle=0 there is nothing to hide it in. bench/settle.py
shows what each window catches.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler import log
from reconciler.actuators.systemd import DEFAULT_SETTLE, Scope, Systemd
from reconciler.apply.engine import Engine
from reconciler.models import FileSpec, NodeSpec
from reconciler.plan.result import Outcome
from tests.fixtures.systemd_user import UserManager, user_manager
from tests.specs import ENV, spec, unit

UNITS = 50
RUNS = 7
CHANGED = "bench-07.service"
SETTLES: dict[str, float | None] = {
    "change": None,
    "change03": 0.3,
    "change0": 0.0,
}  # None: default


def unit_text(i: int, variant: int = 0) -> bytes:
    return unit(f"bench-{i:02}.service", f"Environment=VARIANT={variant}\n").content


def node_spec(variant: int, rev: str) -> NodeSpec:
    """50 units; only CHANGED differs between variants."""
    units = [
        unit(name, f"Environment=VARIANT={variant if name == CHANGED else 0}\n")
        for name in (f"bench-{i:02}.service" for i in range(UNITS))
    ]
    return spec(units, [FileSpec(ENV, b"SWARMKEEPER_NODE=bench\n")], rev=rev)


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:7.1f} ms (min {min(xs) * 1000:.1f}, max {max(xs) * 1000:.1f})"


class Raw:
    """The baseline: what a shell script would do, on its own identical manager."""

    def __init__(self, um: UserManager, src: Path) -> None:
        self.um, self.src = um, src
        self.names = [f"bench-{i:02}.service" for i in range(UNITS)]

    def systemctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(
            ["systemctl", "--user", *args], env=self.um.env, check=check, capture_output=True
        )

    def copy_all(self, variant: int) -> None:
        for i, name in enumerate(self.names):
            (self.src / name).write_bytes(unit_text(i, variant if name == CHANGED else 0))
            shutil.copyfile(self.src / name, self.um.unit_dir / name)

    def reset(self) -> None:
        self.systemctl("stop", *self.names, check=False)  # not loaded on the first run
        for n in self.names:
            (self.um.unit_dir / n).unlink(missing_ok=True)
        self.systemctl("daemon-reload")

    def first(self) -> float:
        t0 = time.perf_counter()
        self.copy_all(0)
        self.systemctl("daemon-reload")
        self.systemctl("start", *self.names)
        return time.perf_counter() - t0

    def change(self, variant: int) -> float:
        t0 = time.perf_counter()
        self.copy_all(variant)
        self.systemctl("daemon-reload")
        self.systemctl("restart", CHANGED)
        return time.perf_counter() - t0


async def measure(um: UserManager, raw: Raw, work: Path) -> dict[str, list[float]]:
    """Engine and raw steps interleaved, so both see the same load on a shared machine."""
    out: dict[str, list[float]] = {k: [] for k in ("first", "raw_first", "noop", "calls", *SETTLES)}
    out.update({f"raw_{k}": [] for k in SETTLES})
    sd = await Systemd.connect(Scope.USER, address=um.private_address, unit_dir=um.unit_dir)
    try:
        empty = spec([], rev="empty")
        engine: Engine | None = None
        for run in range(RUNS):
            if engine is not None:  # tear the previous run down through the engine itself
                assert (await engine.apply(empty)).outcome is Outcome.CONVERGED
            await asyncio.to_thread(raw.reset)
            engine = Engine(sd, work / f"state-{run}", root=work / "root")
            t0 = time.perf_counter()
            r = await engine.apply(node_spec(0, "r0"))
            out["first"].append(time.perf_counter() - t0)
            assert r.outcome is Outcome.CONVERGED, r.error
            out["raw_first"].append(await asyncio.to_thread(raw.first))
        assert engine is not None
        for _ in range(RUNS):
            calls = sd.mutating_calls
            t0 = time.perf_counter()
            r = await engine.apply(node_spec(0, "r0"))
            out["noop"].append(time.perf_counter() - t0)
            assert r.outcome is Outcome.CONVERGED and not r.actions
            out["calls"].append(sd.mutating_calls - calls)
        variant = 0
        for key, settle in SETTLES.items():
            # One block per setting, its first apply unmeasured: what an apply finds depends
            # on the one before (a gate with a window leaves the next observe's reads done).
            engine.settle = settle
            for i in range(RUNS + 1):
                variant += 1
                t0 = time.perf_counter()
                r = await engine.apply(node_spec(variant, f"r{variant}"))
                dt = time.perf_counter() - t0
                assert r.outcome is Outcome.CONVERGED, r.error
                assert [a.action.VERB for a in r.actions if a.action.VERB == "restart"] == [
                    "restart"
                ]
                if i == 0:
                    continue
                out[key].append(dt)
                for a in r.actions:
                    out.setdefault(f"step:{key}:{a.action.VERB}", []).append(a.seconds)
                out[f"raw_{key}"].append(await asyncio.to_thread(raw.change, variant))
    finally:
        await sd.close()
    return out


def ratio(xs: list[float], ys: list[float]) -> float:
    """Median of the paired ratios (each engine run against the raw run next to it)."""
    return statistics.median(x / y for x, y in zip(xs, ys, strict=True))


def main() -> None:
    log.configure("warning")
    with tempfile.TemporaryDirectory(prefix="skb-", dir="/tmp") as tmp:
        base = Path(tmp)
        with user_manager(base, "eng") as eng, user_manager(base, "raw") as raw_um:
            (base / "src").mkdir()
            f = asyncio.run(measure(eng, Raw(raw_um, base / "src"), base / "work"))
    print(f"bench/apply.py: {UNITS} units, median of {RUNS} runs, real systemd --user (D-Bus),")
    print("  engine and raw baseline interleaved; ratio = median of paired ratios")
    print(
        f"  first apply      engine {ms(f['first'])}   raw {ms(f['raw_first'])}   ratio {ratio(f['first'], f['raw_first']):.2f}x"
    )
    noop = statistics.median(f["noop"])
    print(
        f"  no-op pass       engine {ms(f['noop'])}   target < 50 ms: {'OK' if noop < 0.05 else 'MISSED'}; "
        f"mutating systemd calls: {max(f['calls'])}"
    )
    for key, settle in SETTLES.items():
        label = (
            f"settle={DEFAULT_SETTLE}s, the default" if settle is None else f"settle={settle:g}s"
        )
        rt = ratio(f[key], f[f"raw_{key}"])
        print(
            f"  one-unit change  engine {ms(f[key])}   raw {ms(f[f'raw_{key}'])}   ratio {rt:.2f}x "
            f"({label}; target <= 1.5x: {'OK' if rt <= 1.5 else 'MISSED'})"
        )
        prefix = f"step:{key}:"
        steps = {
            k.removeprefix(prefix): statistics.median(v) * 1000
            for k, v in f.items()
            if k.startswith(prefix)
        }
        other = statistics.median(f[key]) * 1000 - sum(steps.values())
        print(
            "      where the time goes: "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in steps.items())
            + f", observe+plan+inventory {other:.1f} ms"
        )


if __name__ == "__main__":
    main()
