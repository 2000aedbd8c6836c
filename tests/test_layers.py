"""The package's shape: no import cycles (type-only ones included), a small top level.

The layer contracts themselves are import-linter's (``make lint``); this is what it has no
contract for.
"""

from __future__ import annotations

from pathlib import Path

import grimp

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
