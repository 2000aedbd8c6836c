"""What the health gate's settle window buys and costs, on a real systemd user manager.

``Type=simple`` units are "active" from the fork on, so the gate also wants them to have been
active for a settle window (``DEFAULT_SETTLE``) before it calls them healthy. This prints:

* for units that fail at once (``/bin/false``, a missing binary, a shell's ``exit 1``, a
  Python ``SystemExit(1)``, a 50 ms sleep then exit): how long after activation they exited,
  from systemd's own timestamps (ActiveEnter -> ExecMainExit), and the windows that would
  have let at least one run pass as healthy;
* what the gate costs a healthy unit: restart + gate for 1 and for 5 units restarted one
  after another and gated together (as ``Engine._verify`` does), per window, against the raw
  baseline measured in the same run (``systemctl --user restart`` of the same units, which
  checks nothing).

    .venv/bin/python bench/settle.py [runs]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.actuators.systemd import DEFAULT_SETTLE, SERVICE, UNIT, Scope, Systemd
from reconciler.actuators.unitstatus import unit_path
from tests.fixtures.systemd_user import UserManager, user_manager

CRASHERS = {
    "/bin/false": "/bin/false",
    "missing binary": "/nonexistent/bin/x",
    "sh exit 1": "/bin/sh -c 'exit 1'",
    "python -S exit 1": f"{sys.executable} -S -c 'raise SystemExit(1)'",
    "python exit 1": f"{sys.executable} -c 'raise SystemExit(1)'",
    "sleep 0.05; exit 1": "/bin/sh -c 'sleep 0.05; exit 1'",
}
WINDOWS = (0.0, 0.05, 0.1, 0.2, DEFAULT_SETTLE)
HEALTHY = "[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart=/bin/sleep infinity\n"


def ms(x: float) -> str:
    return f"{x * 1000:6.1f}"


async def exit_latency(sd: Systemd, name: str, runs: int) -> list[float]:
    """Seconds from activation to the main process's exit, per run (systemd's clock)."""
    out = []
    path = unit_path(name)
    for _ in range(runs):
        await sd.reset_failed(name)
        await sd.start(name)
        st = await sd.wait_healthy(name, 10, settle=2.0)  # long: only the failure ends it
        assert st.failed, st
        active = await sd.reader.get(path, UNIT, "ActiveEnterTimestampMonotonic")
        exited = await sd.reader.get(path, SERVICE, "ExecMainExitTimestampMonotonic")
        out.append((int(exited) - int(active)) / 1e6)
    return out


async def gate(sd: Systemd, names: list[str], settle: float) -> float:
    t0 = time.perf_counter()
    for n in names:
        assert await sd.restart(n) == "done"
    sts = await asyncio.gather(*(sd.wait_healthy(n, 10, settle=settle) for n in names))
    assert all(s.healthy for s in sts), sts
    return time.perf_counter() - t0


def raw_restart(um: UserManager, names: list[str]) -> float:
    t0 = time.perf_counter()
    for n in names:
        um.systemctl("restart", n, check=True)
    return time.perf_counter() - t0


async def bench(um: UserManager, runs: int) -> None:
    crashers = {label: f"crash-{i}.service" for i, label in enumerate(CRASHERS)}
    for label, name in crashers.items():
        (um.unit_dir / name).write_text(
            f"[Unit]\nStartLimitIntervalSec=0\n[Service]\nExecStart={CRASHERS[label]}\n"
        )
    healthy = [f"ok-{i}.service" for i in range(5)]
    for n in healthy:
        (um.unit_dir / n).write_text(HEALTHY)
    um.systemctl("daemon-reload", check=True)
    um.systemctl("start", *healthy, check=True)
    sd = await Systemd.connect(Scope.USER, address=um.private_address, unit_dir=um.unit_dir)
    try:
        print(f"bench/settle.py: real systemd --user, {runs} runs each, ms")
        print(f"  units that fail at once: activation -> exit (default window {DEFAULT_SETTLE}s)")
        print(f"  {'ExecStart':22} {'median':>7} {'p90':>7} {'max':>7}   windows that miss it")
        for label, name in crashers.items():
            xs = sorted(await exit_latency(sd, name, runs))
            missed = [w for w in WINDOWS if w > 0 and w <= xs[-1]]
            print(
                f"  {label:22} {ms(statistics.median(xs))} {ms(xs[int(0.9 * (len(xs) - 1))])} "
                f"{ms(xs[-1])}   {', '.join(f'{w:g}s' for w in missed) or '-'}"
            )
        print("  healthy Type=simple units: restart + gate (engine) vs systemctl restart (raw)")
        for count in (1, 5):
            names = healthy[:count]
            raw = [await asyncio.to_thread(raw_restart, um, names) for _ in range(runs)]
            for w in WINDOWS:
                xs = [await gate(sd, names, w) for _ in range(runs)]
                print(
                    f"  {count} unit(s), window {w:4.2f}s: {ms(statistics.median(xs))}   "
                    f"raw {ms(statistics.median(raw))}   ratio "
                    f"{statistics.median(xs) / statistics.median(raw):5.2f}x"
                )
    finally:
        await sd.close()


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    with (
        tempfile.TemporaryDirectory(prefix="sk-settle-", dir="/tmp") as tmp,
        user_manager(Path(tmp), "settle") as um,
    ):
        asyncio.run(bench(um, runs))


if __name__ == "__main__":
    main()
