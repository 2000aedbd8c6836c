"""What the engine reads before it acts, against a real systemd user manager.

An apply that follows its plan within ``REUSE_WITHIN`` executes that plan (a pass plans,
takes its rollout slot, applies) unless anything the plan was made from changed; the
disk is read without a worker thread while what changed is small, and in one when it is
not: either way a change by hand is seen.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from reconciler.actuators.inventory import InventoryStore
from reconciler.actuators.systemd import Scope, Systemd
from reconciler.apply import observe
from reconciler.apply.engine import Engine
from reconciler.models import FileSpec, NodeSpec
from reconciler.plan import planner as P
from reconciler.plan.result import Outcome
from tests.fixtures.systemd_user import UserManager
from tests.specs import spec, unit


@dataclass
class Node:
    um: UserManager
    engine: Engine
    root: Path
    state: Path

    def show(self, unit: str, prop: str) -> str:
        return self.um.systemctl("show", "-P", prop, unit).stdout.strip()


@pytest.fixture
async def node(systemd_user: UserManager, tmp_path: Path) -> AsyncIterator[Node]:
    sd = await Systemd.connect(
        Scope.USER, address=systemd_user.private_address, unit_dir=systemd_user.unit_dir
    )
    try:
        engine = Engine(sd, tmp_path / "state", root=tmp_path / "root")
        yield Node(systemd_user, engine, tmp_path / "root", tmp_path / "state")
    finally:
        await sd.close()


def revision(n: int, content: bytes = b"ours\n") -> NodeSpec:
    return spec([unit("a.service", exec_start=f"/bin/sleep {100000 + n}")],
                [FileSpec("/etc/x.conf", content)], rev=f"r{n}")  # fmt: skip


async def _other_spec(node: Node, s: NodeSpec) -> NodeSpec:
    return replace(s)  # equal, but not the spec the plan was made for


async def _systemd_call(node: Node, s: NodeSpec) -> NodeSpec:
    await node.engine.systemd.daemon_reload()
    return s


async def _inventory_written(node: Node, s: NodeSpec) -> NodeSpec:
    store = InventoryStore(node.state)  # another process, say `swarmkeeper apply`
    store.save(replace(store.load(), updated_at=1.0))
    return s


async def _window_over(node: Node, s: NodeSpec) -> NodeSpec:
    observe.REUSE_WITHIN = 0.0
    return s


@pytest.mark.parametrize("between", [_other_spec, _systemd_call, _inventory_written, _window_over])
async def test_an_apply_observes_again_when_its_plan_may_be_stale(
    node: Node, between: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observe, "REUSE_WITHIN", observe.REUSE_WITHIN)  # restored after
    assert (await node.engine.apply(revision(1))).outcome is Outcome.CONVERGED
    s = revision(2)
    assert [P.describe(a).split(":")[0] for a in await node.engine.plan(s)][:1] == [
        "write a.service"
    ]
    (node.root / "etc/x.conf").write_bytes(b"theirs\n")  # after the plan saw it
    assert callable(between)
    s = await between(node, s)
    result = await node.engine.apply(s)
    assert result.outcome is Outcome.CONVERGED, result.error
    assert (node.root / "etc/x.conf").read_bytes() == b"ours\n"  # its own observe saw it
    assert "100002" in node.show("a.service", "ExecStart")
    assert await node.engine.plan(s) == ()


async def test_an_apply_right_after_its_plan_executes_that_plan(node: Node) -> None:
    assert (await node.engine.apply(revision(1))).outcome is Outcome.CONVERGED
    s = revision(2)
    p = await node.engine.plan(s)
    (node.root / "etc/x.conf").write_bytes(b"theirs\n")  # after the plan saw it
    result = await node.engine.apply(s)
    assert result.outcome is Outcome.CONVERGED, result.error
    assert [r.action for r in result.actions] == list(p)
    assert "100002" in node.show("a.service", "ExecStart")
    # what changed after the plan is the next pass's drift, repaired then
    assert (node.root / "etc/x.conf").read_bytes() == b"theirs\n"
    assert [P.describe(a) for a in await node.engine.plan(s)] == [
        "write /etc/x.conf: drift: edited by hand"
    ]
    assert (await node.engine.apply(s)).outcome is Outcome.CONVERGED
    assert (node.root / "etc/x.conf").read_bytes() == b"ours\n"
    assert await node.engine.plan(s) == ()


@pytest.mark.parametrize("size", [10, observe.INLINE_HASH_BYTES + 1])
async def test_a_file_changed_by_hand_is_seen_small_or_large(node: Node, size: int) -> None:
    """Small changes are hashed in the event loop, large ones in a thread: both are seen,
    also with the same size and modification time as the file the engine wrote."""
    ours = b"o" * size
    s = revision(1, ours)
    assert (await node.engine.apply(s)).outcome is Outcome.CONVERGED
    assert await node.engine.plan(s) == ()
    path = node.root / "etc/x.conf"
    st = path.stat()
    path.write_bytes(b"t" * size)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # ctime still moves
    assert [P.describe(a) for a in await node.engine.plan(s)] == [
        "write /etc/x.conf: drift: edited by hand"
    ]
    assert (await node.engine.apply(replace(s))).outcome is Outcome.CONVERGED
    assert path.read_bytes() == ours
    path.unlink()
    assert [P.describe(a).split(":")[0] for a in await node.engine.plan(s)] == ["write /etc/x.conf"]
