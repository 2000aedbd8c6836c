"""Where one agent's CPU goes when it applies a new revision from its artifact.

One real etcd, one git remote (only to build the artifacts: the agent renders from etcd) and
one ``swarmkeeper agent`` process with the dry actuator, started exactly as
``bench/converge.py`` starts each of its fifty (its helpers are imported, not copied). The
agent runs inside a small wrapper (this file, ``--child``) that measures, without changing
any code path:

- CPU of the process (every thread: the event loop, ``asyncio.to_thread`` workers, gRPC's
  own threads) spent in each step of a pass — ``render`` (of which the artifact's etcd read,
  and the verification and rendering in a worker thread), ``plan``, ``rollout`` (the slot and
  the ``applying`` status, one transaction), ``apply`` (split into its own steps), the final
  ``status`` write (with the slot's release, metrics, notifications) — the rest of the pass,
  and what the process spent outside passes (watch events, heartbeat, gRPC housekeeping);
- then, over another set of revisions, a cProfile of the event loop's thread and of every
  ``asyncio.to_thread`` call, with a CPU clock (``time.thread_time``), merged: the functions
  that cost the most per revision, by cumulative and by own time. The profiler roughly
  doubles the CPU it measures, so its figures rank functions; the step table (measured
  without it) is the one to quote.

Per revision the bench changes one of the two units (``bench/converge.py``'s revision):
write one unit file, daemon-reload, restart it, gate, inventory. Also printed: the idle
CPU of the agent (ms per second), to put "outside passes" in proportion. On a shared
machine the figures are noisy: the load average is printed with them; compare runs
interleaved, not one after the other.

Usage: python bench/profile_pass.py [--revisions 20] [--top 25] [--no-cprofile]
       [--save FILE] [--idle SECONDS] [--gap SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import json
import os
import pstats
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))  # converge.py puts the repository on sys.path itself

import converge  # noqa: E402

from reconciler.revisions.store import build  # noqa: E402
from tests.fixtures.etcd import etcd_server, free_ports  # noqa: E402
from tests.fixtures.gitrepo import make_state_repo  # noqa: E402

NODE = "node-000"

# -- the child: the agent, measured --------------------------------------------------------

ACC: dict[str, float] = defaultdict(float)  # CPU seconds by step since the last SIGUSR1
COUNT: dict[str, int] = defaultdict(int)
_state: dict[str, Any] = {"profile": None, "threads": [], "t0": 0.0, "applying": False}


def _coro(owner: Any, name: str, label: str | Callable[[], str]) -> None:
    """Add the process's CPU while ``owner.name`` (a coroutine function) runs to ``label``."""
    orig = getattr(owner, name)

    @functools.wraps(orig)
    async def timed(*a: Any, **k: Any) -> Any:
        key = label if isinstance(label, str) else label()
        t = time.process_time()
        try:
            return await orig(*a, **k)
        finally:
            ACC[key] += time.process_time() - t
            COUNT[key] += 1

    setattr(owner, name, timed)


_nested = threading.local()


def _sync(owner: Any, name: str, label: str) -> None:
    """Add the calling thread's CPU in ``owner.name`` (a plain function) to ``label``, unless
    it runs inside another function measured so (the inventory's ``save`` calls ``stage``)."""
    orig = getattr(owner, name)

    @functools.wraps(orig)
    def timed(*a: Any, **k: Any) -> Any:
        if getattr(_nested, "inside", False):
            return orig(*a, **k)
        _nested.inside = True
        t = time.thread_time()
        try:
            return orig(*a, **k)
        finally:
            ACC[label] += time.thread_time() - t
            COUNT[label] += 1
            _nested.inside = False

    setattr(owner, name, timed)


def _instrument() -> None:
    import contextlib

    from reconciler.actuators.inventory import InventoryStore
    from reconciler.agent import passes, render
    from reconciler.agent.agent import Agent
    from reconciler.agent.report import Reporter
    from reconciler.apply.engine import Engine
    from reconciler.apply.execute import Executor
    from reconciler.apply.observe import Observer

    step = passes._Clock.step

    @contextlib.contextmanager
    def cpu_step(self: Any, name: str) -> Any:
        t = time.process_time()
        try:
            with step(self, name):
                yield
        finally:
            ACC[name] += time.process_time() - t
            COUNT[name] += 1

    passes._Clock.step = cpu_step  # type: ignore[method-assign]
    _coro(Agent, "reconcile", "pass")
    _coro(Agent, "_artifact", "render: artifact read (etcd)")
    _sync(render.Renderer, "_render", "render: verify + render (thread)")
    _coro(Reporter, "report", "status")
    # observe_and_plan runs in the plan step, then again at the start of the apply
    _coro(Observer, "observe_and_plan",
          lambda: "apply: observe + plan" if _state["applying"] else "plan: observe + plan")  # fmt: skip
    apply = Engine._apply

    @functools.wraps(apply)
    async def flagged(*a: Any, **k: Any) -> Any:
        _state["applying"] = True
        try:
            return await apply(*a, **k)
        finally:
            _state["applying"] = False

    Engine._apply = flagged  # type: ignore[method-assign]
    _coro(Engine, "_pending", "apply: pending record (build)")
    _sync(InventoryStore, "save", "apply: inventory save (pending)")
    _coro(Executor, "execute", "apply: actions + gate")
    _sync(InventoryStore, "stage", "apply: inventory stage (thread)")
    _sync(InventoryStore, "commit", "apply: inventory commit (thread)")
    _sync(InventoryStore, "load", "inventory load")

    to_thread = asyncio.to_thread

    async def profiled_to_thread(func: Callable[..., Any], /, *a: Any, **k: Any) -> Any:
        if _state["profile"] is None:
            return await to_thread(func, *a, **k)

        def run() -> Any:
            p = cProfile.Profile(time.thread_time)
            p.enable()
            try:
                return func(*a, **k)
            finally:
                p.disable()
                _state["threads"].append(p)

        return await to_thread(run)

    asyncio.to_thread = profiled_to_thread


def _start(out: Path) -> None:
    ACC.clear()
    COUNT.clear()
    _state["threads"] = []
    if (out / "mode").read_text().strip() == "cprofile":
        _state["profile"] = cProfile.Profile(time.thread_time)
        _state["profile"].enable()
    _state["t0"] = time.process_time()


def _dump(out: Path) -> None:
    total = time.process_time() - _state["t0"]
    prof, _state["profile"] = _state["profile"], None
    if prof is not None:
        prof.disable()
        stats = pstats.Stats(prof)
        for p in _state["threads"]:
            stats.add(p)
        stats.dump_stats(out / "cprofile.tmp")
        os.replace(out / "cprofile.tmp", out / "cprofile.pstats")
    doc = {"total": total, "acc": dict(ACC), "count": dict(COUNT)}
    (out / "steps.tmp").write_text(json.dumps(doc))
    os.replace(out / "steps.tmp", out / "steps.json")


def child(out: Path, argv: list[str]) -> int:
    _instrument()
    signal.signal(signal.SIGUSR1, lambda *_: _start(out))
    signal.signal(signal.SIGUSR2, lambda *_: _dump(out))
    from reconciler.cli import main

    return main(argv)


# -- the parent: etcd, the repo, revisions ---------------------------------------------------


def measure(pid: int, out: Path, mode: str, action: Callable[[], None]) -> Any:
    """Run ``action`` with the child measuring in ``mode``; its report, with ``wall``."""
    for f in ("steps.json", "cprofile.pstats"):
        (out / f).unlink(missing_ok=True)
    (out / "mode").write_text(mode)
    os.kill(pid, signal.SIGUSR1)
    time.sleep(0.2)
    t0 = time.monotonic()
    action()
    wall = time.monotonic() - t0
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while not (out / "steps.json").exists():
        if time.monotonic() > deadline:
            raise SystemExit("the agent wrote no measurements")
        time.sleep(0.05)
    doc = json.loads((out / "steps.json").read_text())
    doc["wall"] = wall + 0.2
    return doc


ROWS = [  # (label, key in the child's report, indent); nested rows add up to their parent
    ("render", "render", 0),
    ("artifact read (etcd)", "render: artifact read (etcd)", 1),
    ("verify + render (thread)", "render: verify + render (thread)", 1),
    ("plan (observe + plan)", "plan", 0),
    ("rollout (slot + applying status)", "rollout", 0),
    ("apply", "apply", 0),
    ("observe + plan again", "apply: observe + plan", 1),
    ("pending record: build", "apply: pending record (build)", 1),
    ("pending record: save (thread)", "apply: inventory save (pending)", 1),
    ("actions + gate", "apply: actions + gate", 1),
    ("inventory staged meanwhile (thread)", "apply: inventory stage (thread)", 2),
    ("inventory commit (thread)", "apply: inventory commit (thread)", 1),
    ("status write (report)", "status", 0),
]


def print_steps(doc: Any, revisions: int, idle_ms_s: float) -> None:
    acc = doc["acc"]

    def ms(key: str) -> float:
        return float(acc.get(key, 0.0)) * 1000 / revisions

    print(f"\nagent CPU per revision (ms), {revisions} revisions, "
          f"{doc['count'].get('pass', 0) / revisions:.1f} passes per revision, no profiler:")  # fmt: skip
    for label, key, indent in ROWS:
        print(f"  {'  ' * indent}{label:<{44 - 2 * indent}}{ms(key):7.2f}")
        if key == "apply: inventory commit (thread)":
            parts = ("observe + plan", "pending record (build)", "inventory save (pending)",
                     "actions + gate", "inventory commit (thread)")  # fmt: skip
            rest = ms("apply") - sum(ms(f"apply: {p}") for p in parts)
            print(f"    {'rest (hand-offs, records, logging)':<40}{rest:7.2f}")
    steps = sum(ms(k) for k in ("render", "plan", "rollout", "apply", "status"))
    print(f"  {'rest of the pass':<44}{ms('pass') - steps:7.2f}")
    print(f"  {'  of which inventory loads':<44}{ms('inventory load'):7.2f}")
    outside = (doc["total"] - acc.get("pass", 0.0)) * 1000 / revisions
    print(f"  {'outside passes':<44}{outside:7.2f}")
    idle = idle_ms_s * doc["wall"] / revisions
    print(f"  {'  of which idle (heartbeat...; est.)':<44}{idle:7.2f}")
    print(f"  {'total (the process, all threads)':<44}{doc['total'] * 1000 / revisions:7.2f}")
    print(f"  idle agent: {idle_ms_s:.2f} ms of CPU per second; "
          f"{doc['wall'] / revisions:.2f} s per revision")  # fmt: skip


def print_profile(path: Path, revisions: int, top: int) -> None:
    st = pstats.Stats(str(path))
    rows = st.stats  # type: ignore[attr-defined]

    def name(k: tuple[str, int, str]) -> str:
        f, line, fn = k
        if f == "~":
            return fn
        for marker in ("/site-packages/", "/reconciler/", "/lib/python3"):
            if marker in f:
                f = f.split(marker, 1)[1]
                break
        return f"{f}:{line}({fn})"

    for title, idx in (("cumulative", 3), ("own", 2)):
        print(f"\ntop {top} functions by {title} CPU, ms per revision (cProfile, thread CPU clock; "
              "the profiler's overhead inflates them: they rank, the table above measures; "
              "every resumption of a coroutine counts as a call):")  # fmt: skip
        best = sorted(rows.items(), key=lambda kv: kv[1][idx], reverse=True)[:top]
        for k, v in best:
            print(f"  {v[idx] * 1000 / revisions:8.2f}  {v[2] * 1000 / revisions:8.2f} own  "
                  f"{v[1] / revisions:7.1f} calls  {name(k)}")  # fmt: skip


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        sys.exit(child(Path(sys.argv[2]), sys.argv[4:]))
    ap = argparse.ArgumentParser()
    ap.add_argument("--revisions", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU measured")
    ap.add_argument("--gap", type=float, default=0.3, help="seconds between revisions")
    ap.add_argument("--no-cprofile", action="store_true")
    ap.add_argument("--save", type=Path, help="keep the merged cProfile stats in this file")
    a = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="sk-profile-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        with etcd_server() as etcd:
            repo = make_state_repo(base / "repo", converge.state(1))
            d, out = base / NODE, base / "out"
            d.mkdir()
            out.mkdir()
            argv = converge.agent_argv(
                NODE, etcd.endpoint, repo.url, d, free_ports(1)[0], "artifact"
            )
            log = (d / "agent.log").open("wb")
            proc = subprocess.Popen([sys.executable, __file__, "--child", str(out), "--", *argv],
                                    cwd=converge.REPO, stdout=log, stderr=log)  # fmt: skip
            pid = proc.pid

            def publish(r: int) -> None:
                rev = repo.commit({"units/b.service": converge.UNIT.format(rev=f"p{r}")}, f"r{r}")
                art = build(repo.work, rev)
                asyncio.run(converge.converge_on(etcd.endpoint, [NODE], rev, limit=60, art=art))
                time.sleep(a.gap)

            head = repo.commit({"units/b.service": converge.UNIT.format(rev="start")}, "start")
            asyncio.run(converge.converge_on(etcd.endpoint, [NODE], head, limit=120,
                                             art=build(repo.work, head)))  # fmt: skip
            for r in range(3):  # warm: imports, caches, the first gRPC calls of each kind
                publish(1000 + r)
            time.sleep(1.0)
            load = os.getloadavg()[0]
            idle = measure(pid, out, "idle", lambda: time.sleep(a.idle))
            idle_ms_s = idle["total"] * 1000 / idle["wall"]

            def revisions() -> None:
                for r in range(a.revisions):
                    publish(r)

            doc = measure(pid, out, "steps", revisions)
            print_steps(doc, a.revisions, idle_ms_s)
            if not a.no_cprofile:
                measure(pid, out, "cprofile", revisions)
                print_profile(out / "cprofile.pstats", a.revisions, a.top)
                if a.save is not None:
                    shutil.copyfile(out / "cprofile.pstats", a.save)
            print(f"\nload average (1 min): {load:.2f} before, {os.getloadavg()[0]:.2f} after; "
                  f"{os.cpu_count()} cores")  # fmt: skip
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if os.environ.get("KEEP") is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
