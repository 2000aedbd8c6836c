"""Median cost of systemd operations: the D-Bus actuator vs a spawned ``systemctl --user``.

One real user manager (tests/fixtures/systemd_user.py), one persistent D-Bus connection per
address (the node's dbus-daemon and the manager's private socket), and, in the same run, the
same operations through a spawned ``systemctl --user`` as the raw baseline. Prints medians in
milliseconds and the ratio systemctl / D-Bus (above 1: the actuator is faster), then how
many connects to the private socket stall with plain dbus-fast and with ``SystemdBus``.

    .venv/bin/python bench/systemd_calls.py [runs]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dbus_fast.aio import MessageBus

from reconciler.actuators.dbus import SystemdBus
from reconciler.actuators.systemd import Scope, Systemd
from tests.fixtures.systemd_user import UserManager, user_manager

UNITS = 50
STALL = 0.5
UNIT = (
    "[Unit]\nDescription=bench {i}\nStartLimitIntervalSec=0\n"
    "[Service]\nExecStart=/bin/sleep infinity\nExecReload=/bin/true\n"
)


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


async def timed(runs: int, op: Callable[[], Awaitable[object]]) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        await op()
        samples.append(time.perf_counter() - t0)
    return median_ms(samples)


def timed_cli(runs: int, um: UserManager, *args: str) -> float:
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        um.systemctl(*args, check=True)
        samples.append(time.perf_counter() - t0)
    return median_ms(samples)


async def connect_once(um: UserManager, address: str) -> None:
    sd = await Systemd.connect(Scope.USER, address=address, unit_dir=um.unit_dir)
    await sd.close()


Op = tuple[str, Callable[[], Awaitable[object]], tuple[str, ...]]


def _operations(sd: Systemd, one: str, names: list[str]) -> list[Op]:
    """(label, D-Bus call, the systemctl arguments doing the same)."""
    return [
        ("is-active (1 unit)", lambda: sd.status([one]), ("is-active", one)),
        (
            f"status ({UNITS} units)",
            lambda: sd.status(names),
            ("show", "-p", "ActiveState,UnitFileState,InvocationID", *names),
        ),
        ("daemon-reload", sd.daemon_reload, ("daemon-reload",)),
        ("restart", lambda: sd.restart(one), ("restart", one)),
        ("reload", lambda: sd.reload(one), ("reload", one)),
    ]


def _connector(um: UserManager, address: str) -> Callable[[], Awaitable[None]]:
    return lambda: connect_once(um, address)


async def bench(um: UserManager, runs: int) -> None:
    names = [f"bench{i:02d}.service" for i in range(UNITS)]
    for i, name in enumerate(names):
        (um.unit_dir / name).write_text(UNIT.format(i=i))
    um.systemctl("daemon-reload", check=True)
    um.systemctl("start", *names, check=True)
    one = names[7]

    rows: list[tuple[str, float, float]] = []
    for label, address in (("bus", um.bus_address), ("private", um.private_address)):
        sd = await Systemd.connect(Scope.USER, address=address, unit_dir=um.unit_dir)
        try:
            await sd.status(names)  # warm the property cache and the unit refs
            ops = _operations(sd, one, names)
            for what, op, cli in ops:
                rows.append((f"{what} [{label}]", await timed(runs, op), timed_cli(runs, um, *cli)))
            # after a daemon-reload systemd recomputes each UnitFileState from disk on first read
            rows.append(
                (
                    f"status ({UNITS}) after reload [{label}]",
                    await _after_reload(runs, sd, names),
                    _after_reload_cli(runs, um, names),
                )
            )
            # start and stop alternate so that each one really changes the unit
            rows.append(
                (
                    f"start [{label}]",
                    await _alternating(runs, sd.stop, sd.start, one),
                    _alternating_cli(runs, um, one),
                )
            )
            rows.append(
                (
                    f"stop [{label}]",
                    await _alternating(runs, sd.start, sd.stop, one),
                    _alternating_cli(runs, um, one, stop=True),
                )
            )
            await sd.start(one)
        finally:
            await sd.close()
        rows.append(
            (f"connect [{label}]", await timed(runs, _connector(um, address)), float("nan"))
        )

    print(f"systemd user manager, {UNITS} units loaded, median of {runs} runs (ms)")
    print(f"{'operation':34} {'D-Bus':>9} {'systemctl':>10} {'ratio':>7}")
    for what, dbus, raw in rows:
        ratio = raw / dbus if raw == raw and dbus > 0 else float("nan")
        raw_text = f"{raw:10.2f}" if raw == raw else f"{'-':>10}"
        ratio_text = f"{ratio:6.1f}x" if ratio == ratio else f"{'-':>7}"
        print(f"{what:34} {dbus:9.2f} {raw_text} {ratio_text}")
    stalled_plain = await _stalls(um, MessageBus, runs * 2)
    stalled_cured = await _stalls(um, SystemdBus, runs * 2)
    print(
        f"private-socket connects stalled (> {STALL}s): plain dbus-fast MessageBus "
        f"{stalled_plain}/{runs * 2}, SystemdBus (TIOCOUTQ wait) {stalled_cured}/{runs * 2}"
    )


async def _stalls(um: UserManager, bus_class: type[MessageBus], attempts: int) -> int:
    """Connects to the private socket that hang; systemd 252 stalls when Hello shares a
    read with the SASL BEGIN line."""
    stalled = 0
    for _ in range(attempts):
        bus = bus_class(bus_address=um.private_address)
        try:
            await asyncio.wait_for(bus.connect(), STALL)
        except TimeoutError:
            stalled += 1
            continue
        bus.disconnect()
    return stalled


async def _alternating(
    runs: int, undo: Callable[[str], Awaitable[str]], do: Callable[[str], Awaitable[str]], name: str
) -> float:
    samples = []
    for _ in range(runs):
        await undo(name)
        t0 = time.perf_counter()
        await do(name)
        samples.append(time.perf_counter() - t0)
    return median_ms(samples)


def _alternating_cli(runs: int, um: UserManager, name: str, stop: bool = False) -> float:
    samples = []
    for _ in range(runs):
        um.systemctl("start" if stop else "stop", name, check=True)
        t0 = time.perf_counter()
        um.systemctl("stop" if stop else "start", name, check=True)
        samples.append(time.perf_counter() - t0)
    return median_ms(samples)


async def _after_reload(runs: int, sd: Systemd, names: list[str]) -> float:
    samples = []
    for _ in range(runs):
        await sd.daemon_reload()
        t0 = time.perf_counter()
        await sd.status(names)
        samples.append(time.perf_counter() - t0)
    return median_ms(samples)


def _after_reload_cli(runs: int, um: UserManager, names: list[str]) -> float:
    samples = []
    for _ in range(runs):
        um.systemctl("daemon-reload", check=True)
        t0 = time.perf_counter()
        um.systemctl("show", "-p", "ActiveState,UnitFileState,InvocationID", *names, check=True)
        samples.append(time.perf_counter() - t0)
    return median_ms(samples)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 21
    with (
        tempfile.TemporaryDirectory(prefix="sk-bench-") as tmp,
        user_manager(Path(tmp), "bench") as um,
    ):
        asyncio.run(bench(um, runs))


if __name__ == "__main__":
    main()
