"""The package's shape: no import cycles (type-only ones included), a small top level.

The layer contracts themselves are import-linter's (``make lint``); this is what it has no
contract for: cycles, the top level's size, and what a pure module loads at run time (a
package's ``__init__`` runs before its modules, which a static contract does not see).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import reconciler


def _cycles(graph: grimp.ImportGraph, root: str) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    mods = sorted(m for m in graph.modules if m.startswith(root))
    edges = {
        m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in mods) for m in mods
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for m in mods:
        if m not in index:
            visit(m)
    return out


def test_no_import_cycles_even_type_only() -> None:
    graph = grimp.build_graph("reconciler", cache_dir=None)
    assert _cycles(graph, "reconciler") == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for m in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph, "p") == [["p.a", "p.b"]]


def test_top_level_keeps_about_ten_modules() -> None:
    top = sorted(p.stem for p in Path(reconciler.__file__).parent.glob("*.py"))
    assert len([m for m in top if not m.startswith("__")]) <= 10, top


# What the pure core must not load, even through a package's __init__ (see pyproject.toml).
_SHELL = ("asyncio", "aetcd", "grpc", "dbus_fast", "aiohttp", "aiodocker", "structlog",
          "logging", "subprocess", "reconciler.apply", "reconciler.etcd",
          "reconciler.actuators", "reconciler.log")  # fmt: skip


def _loaded_by(module: str) -> list[str]:
    """The modules a fresh interpreter holds after importing ``module`` alone."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(Path(reconciler.__file__).parent.parent)}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env
    )
    return list(json.loads(out.stdout))


def _shell_in(mods: list[str]) -> list[str]:
    return [m for m in mods if any(m == s or m.startswith(f"{s}.") for s in _SHELL)]


@pytest.mark.parametrize(
    "module",
    [
        "reconciler.agent.policy",
        "reconciler.plan.result",
        "reconciler.rollout.decide",
        "reconciler.swarm.plan",
        "reconciler.notify.coalesce",
    ],
)
def test_pure_modules_load_no_shell_module_at_run_time(module: str) -> None:
    loaded = _loaded_by(module)
    assert module in loaded
    assert _shell_in(loaded) == []


def test_the_run_time_check_sees_a_shell_module() -> None:
    assert "reconciler.apply.engine" in _shell_in(_loaded_by("reconciler.apply"))
    assert "asyncio" in _shell_in(_loaded_by("reconciler.agent.agent"))
