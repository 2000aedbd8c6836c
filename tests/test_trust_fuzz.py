"""Property: no commit can kill an agent. Random trees go through validate → render → plan →
apply (the dry actuator, real files under a temp root) and end as located problems or as an
apply result: never as an exception, and the whole run stays within a fixed time budget.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from reconciler.actuators.dry import DrySystemd
from reconciler.apply import Engine
from reconciler.desired import RepoTree, load_state, validate_tree
from reconciler.desired.filespolicy import FilesPolicy, ModeBit, render_allowed
from reconciler.errors import InvalidDesiredState
from reconciler.models import NodeFacts, NodeName, Role
from reconciler.plan.result import Outcome

PROBLEM_RE = re.compile(r"^(state|units|files)(/[^:]+)?(:\d+)?: .+")
FACTS = NodeFacts(NodeName("node-1"), Role.MANAGER, "10.0.0.1", ("127.0.0.1:2379",))
BUDGET_SECONDS = 90.0  # for the whole property run on a busy two-core machine
EXAMPLES = 300
_started: list[float] = []

UNIT = b"[Service]\nExecStart=/bin/true\n"
ODD_TEXT = st.text(
    alphabet=st.sampled_from(["a", "b", ".", "/", "\x00", "é", "-", "@", " ", "\n"]), max_size=12
)
NAME = st.text(
    alphabet=st.sampled_from(["a", "b", "é", "-", ".", "_", "1"]), min_size=1, max_size=8
)
GOOD_COMPONENT = st.one_of(
    NAME, NAME, NAME,
    st.integers(235, 241).map(lambda n: "x" * n),  # at the limit
    st.integers(1, 2).map(lambda n: "é" * (60 * n)),  # long in bytes, short in characters
)  # fmt: skip
ODD_COMPONENT = st.one_of(
    ODD_TEXT,
    st.sampled_from([".", "..", ""]),
    st.integers(242, 300).map(lambda n: "x" * n),  # past the limit
    st.just("é" * 130),
)
GOOD_PATH = st.lists(GOOD_COMPONENT, min_size=1, max_size=4).map(lambda p: "/" + "/".join(p))
PATH = st.one_of(
    *[GOOD_PATH] * 6,
    st.lists(st.one_of(GOOD_COMPONENT, ODD_COMPONENT), min_size=1, max_size=4).map(
        lambda parts: "/" + "/".join(parts)
    ),
    st.integers(2900, 5000).map(lambda n: "/" + "/".join(["d" * 200] * (n // 201))),
    ODD_TEXT,
)
GOOD_MODE = st.sampled_from(["0644", "0600", "0755", "0640", "0444", "644"])
MODE = st.one_of(
    *[GOOD_MODE] * 8,
    st.sampled_from(["4755", "2755", "0777", "1777", "0o644", "999", "7777", "12345"]),
    st.integers(-1, 0o20000).map(str),
    st.integers(-1, 0o20000),
)
UNIT_NAME = st.one_of(
    *[st.sampled_from(["a.service", "b.service", "x@y.service", "t.timer"])] * 3,
    *[NAME.map(lambda t: t + ".service")] * 3,
    st.sampled_from(["bad", "a.service/..", "-.service"]),
    st.integers(230, 260).map(lambda n: "u" * (n - len(".service")) + ".service"),
    ODD_TEXT.map(lambda t: t + ".service"),
)
BIG_INT = st.integers(10, 6000).map(lambda n: "9" * n)


@st.composite
def trees(draw: st.DrawFn) -> dict[str, bytes]:
    files_entries: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 3))):
        entry: dict[str, Any] = {"path": draw(PATH), "mode": draw(MODE)}
        if draw(st.booleans()):
            entry["content"] = draw(st.text(max_size=30))
        else:
            entry["source"] = draw(st.sampled_from(["files/x.env", "files/x.env", "files/none"]))
        files_entries.append(entry)
    units = draw(st.lists(UNIT_NAME, max_size=3))
    role: dict[str, Any] = {"units": units, "files": files_entries}
    out = {
        "state/cluster.yaml": b"name: demo\nmanagers: 1\n",
        "state/roles/manager.yaml": yaml.safe_dump(role, allow_unicode=True).encode(),
        "state/roles/worker.yaml": b"units: []\n",
        "files/x.env": b"X=1\n",
    }
    for name in units:
        if "/" not in name and "\x00" not in name:
            out[f"units/{name}"] = UNIT
    if draw(st.integers(0, 8)) == 5:  # an integer no Python int() may read
        where = draw(st.sampled_from(["state/cluster.yaml", "state/roles/worker.yaml"]))
        key = "rollout: {max_unavailable: %s}\n" if where.endswith("cluster.yaml") else "x: %s\n"
        out[where] += (key % draw(BIG_INT)).encode()
    if draw(st.integers(0, 8)) == 5:  # deep nesting
        depth = draw(st.integers(1, 200))
        out["state/nodes/node-1.yaml"] = (
            "labels: {a: " + "[" * depth + "]" * depth + "}\n"
        ).encode()
    return out


async def _plan_and_apply(spec: Any, base: Path) -> Outcome:
    sd = DrySystemd(base / "units")
    engine = Engine(sd, base / "state", root=base / "root", unit_dir=base / "units")
    await engine.plan(spec)
    result = await engine.apply(spec)
    return result.outcome


# the node's files policy: the default one, and one that allows every path and mode bit
POLICIES = st.sampled_from([FilesPolicy(), FilesPolicy(("/",), frozenset(ModeBit))])


@settings(
    max_examples=EXAMPLES, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)  # fmt: skip
@given(trees(), POLICIES)
def test_no_tree_gets_past_validation_and_then_crashes(
    files: dict[str, bytes], policy: FilesPolicy
) -> None:
    if not _started:
        _started.append(time.monotonic())
    tree = RepoTree(files=files)
    problems = validate_tree(tree)
    for p in problems:
        assert PROBLEM_RE.match(str(p)), str(p)
        assert "\n" not in str(p)
    event(re.sub(r"[0-9]+|'.*'", "N", str(problems[0]))[:80] if problems else "applied")
    if not problems:
        try:  # as the agent renders: the node's files policy has the last word
            spec = render_allowed(load_state(tree), FACTS, policy)
        except InvalidDesiredState as e:
            for p in e.problems:
                assert PROBLEM_RE.match(str(p)) and "\n" not in str(p), str(p)
            event("refused by the files policy")
            return
        with tempfile.TemporaryDirectory(prefix="skfuzz-") as d:
            outcome = asyncio.run(_plan_and_apply(spec, Path(d)))
        assert outcome is Outcome.CONVERGED, outcome
    assert time.monotonic() - _started[0] < BUDGET_SECONDS
