"""Property: whatever is done to a valid state, validation returns problems, never raises."""

from __future__ import annotations

import re
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.desired import RepoTree, render, validate_tree
from reconciler.errors import InvalidDesiredState
from reconciler.models import NodeFacts, NodeName, Role
from tests.test_validate import GOOD

PROBLEM_RE = re.compile(r"^(state|units|files)/[^:]+(:\d+)?: .+")
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)  # fmt: skip


def _paths(v: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, (*at, k))
    elif isinstance(v, list):
        for i, x in enumerate(v):
            out += _paths(x, (*at, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, bytes]:
    files = dict(GOOD)
    name = draw(st.sampled_from(sorted(k for k in GOOD if k.startswith("state/"))))
    doc = yaml.safe_load(files[name])
    paths = [p for p in _paths(doc) if p]
    op = draw(st.sampled_from(["drop", "swap", "junk_key", "raw"]))
    if op == "raw":
        data = bytearray(files[name])
        pos = draw(st.integers(0, len(data)))
        data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        files[name] = bytes(data)
        return files
    if paths:
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for k in path[:-1]:
            parent = parent[k]
        if op == "drop":
            del parent[path[-1]]
        elif op == "swap":
            parent[path[-1]] = draw(JUNK)
        else:
            target = parent[path[-1]]
            if isinstance(target, dict):
                target[draw(st.text(min_size=1, max_size=8))] = draw(JUNK)
            else:
                parent[path[-1]] = {draw(st.text(min_size=1, max_size=8)): draw(JUNK)}
    files[name] = yaml.safe_dump(doc).encode()
    return files


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutations_give_clean_result_or_located_problems(files: dict[str, bytes]) -> None:
    problems = validate_tree(RepoTree(files=files))
    for p in problems:
        assert PROBLEM_RE.match(str(p)), str(p)
        assert "\n" not in p.message
    if not problems:  # a valid tree must also render
        try:
            render(RepoTree(files=files), NodeFacts(NodeName("node-1"), Role.WORKER))
        except InvalidDesiredState as e:  # only the "no role" case may remain
            assert "no role" in str(e)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated(), st.sets(st.sampled_from(sorted(GOOD)), max_size=3))
def test_problems_name_files_that_exist(files: dict[str, bytes], removed: set[str]) -> None:
    """A problem points at a file of the tree, or at the directory where one is missing:
    never at a path the operator cannot open."""
    for name in removed:
        files.pop(name, None)
    for p in validate_tree(RepoTree(files=files)):
        if p.path.endswith("/"):
            assert any(f.startswith(p.path) for f in GOOD), str(p)
        else:
            assert p.path in files, str(p)
