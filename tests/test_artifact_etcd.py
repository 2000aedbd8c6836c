"""Revision artifacts through a real etcd (and its gRPC proxy): publish stores and prunes
them in the transaction that moves the desired revision; a node renders from one range
read, with no git at all, and rejects a forged or unsigned artifact with a clear status."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reconciler import keys
from reconciler.actuators.dry import DrySystemd
from reconciler.agent.agent import Agent, AgentSettings
from reconciler.agent.render import Rejection, Renderer
from reconciler.apply.engine import Engine
from reconciler.desired.filespolicy import FilesPolicy
from reconciler.etcd.client import Etcd
from reconciler.models import NodeFacts, NodeName, NodeSpec, Role
from reconciler.revisions.artifact import pack, unpack
from reconciler.revisions.store import build, meta_of, publish, publish_commit, read
from reconciler.source import GitSource
from reconciler.status import NodeState
from tests.fixtures.etcd import EtcdServer, etcd_proxy
from tests.fixtures.gitrepo import StateRepo, git
from tests.test_validate import GOOD

P = "/sk"
FACTS = NodeFacts(NodeName("node-1"), Role.MANAGER, "10.0.0.1", ("127.0.0.1:2379",))
NODE_POLICY = FilesPolicy(("/etc/",))  # the node lets GOOD's files (/etc/x.env) through


def _no_git(tmp: Path) -> GitSource:
    """A source that cannot work: any git use would fail (or create the mirror dir)."""
    return GitSource(str(tmp / "no-such-remote.git"), "main", tmp / "mirror")


async def _revisions(e: Etcd) -> set[str]:
    kvs, _ = await e.get_prefix(keys.revisions_prefix(P), keys_only=True)
    return {kv.key.decode().split("/")[3] for kv in kvs}


async def test_publish_chunks_prunes_and_moves_desired_in_one_step(
    etcd_server: EtcdServer, state_repo: StateRepo, tmp_path: Path
) -> None:
    e = await Etcd.connect([etcd_server.endpoint])
    try:
        shas = []
        for i in range(4):
            shas.append(state_repo.commit({f"units/u{i}.service": f"[Service]\nX={i}\n"}))
            moved, note = await publish_commit(e, P, state_repo.work, shas[-1], keep=2)
            assert moved and note.startswith("artifact ")
        assert await _revisions(e) == set(shas[-2:])
        kv = await e.get(keys.desired_revision(P))
        assert kv is not None and kv.value.decode() == shas[-1]

        # incompressible content over etcd's 1.5 MiB request limit: chunked, read back whole
        big = state_repo.commit({"files/big.bin": os.urandom(2_500_000)})
        await publish_commit(e, P, state_repo.work, big, keep=2)
        kvs, _ = await e.get_prefix(keys.revision_artifact(P, big) + "chunks/", keys_only=True)
        assert len(kvs) == 3
        assert await _revisions(e) == {shas[-1], big}
        before = e.request_count
        art = await read(e, P, big)
        assert e.request_count - before == 1  # one range request for all of it
        assert art is not None and art == build(state_repo.work, big)

        # --keep-artifacts 0: published, no artifact; nodes use git for it
        plain = state_repo.commit({"units/p.service": "[Service]\n"})
        moved, note = await publish_commit(e, P, state_repo.work, plain, keep=0)
        assert moved and "nodes fetch it with git" in note
        assert await read(e, P, plain) is None
    finally:
        await e.close()


async def test_renderer_uses_the_artifact_through_a_proxy_and_no_git(
    etcd_server: EtcdServer, state_repo: StateRepo, tmp_path: Path
) -> None:
    sha = state_repo.commit(dict(GOOD))
    async with await Etcd.connect([etcd_server.endpoint]) as pub:
        await publish_commit(pub, P, state_repo.work, sha)
    with etcd_proxy([etcd_server.endpoint]) as proxy:
        async with await Etcd.connect([proxy.endpoint]) as e:
            src = _no_git(tmp_path)
            renders: list[str] = []
            r = Renderer(src, FACTS, artifacts=lambda rev: read(e, P, rev),
                         on_render=renders.append, files_policy=NODE_POLICY)  # fmt: skip
            spec = await r.spec(sha)
    assert isinstance(spec, NodeSpec) and spec.revision == sha
    assert renders == ["artifact"] and src.fetches == 0 and not src.dir.exists()
    # the git path renders the very same spec
    git = GitSource(state_repo.url, "main", tmp_path / "m")
    git_spec = await Renderer(git, FACTS, files_policy=NODE_POLICY).spec(sha)
    assert git_spec == spec


@pytest.fixture
def signed_pair(state_repo: StateRepo, tmp_path: Path) -> tuple[Path, str, str]:
    """(allowed signers file, an SSH-signed commit, an unsigned commit after it)."""
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"test@example.invalid {(tmp_path / 'k.pub').read_text()}")
    w = state_repo.work
    git(w, "config", "gpg.format", "ssh")
    git(w, "config", "user.signingkey", str(key))
    (w / "units/s.service").write_text("[Service]\nExecStart=/bin/true\n")
    git(w, "add", "-A")
    git(w, "commit", "-q", "-S", "-m", "signed")
    signed = git(w, "rev-parse", "HEAD")
    unsigned = state_repo.commit({"units/s.service": "[Service]\nExecStart=/bin/false\n"})
    return signers, signed, unsigned


async def test_forged_and_unsigned_artifacts_are_rejected(
    etcd_server: EtcdServer, state_repo: StateRepo, tmp_path: Path,
    signed_pair: tuple[Path, str, str],
) -> None:  # fmt: skip
    signers, signed, unsigned = signed_pair
    w = state_repo.work
    async with await Etcd.connect([etcd_server.endpoint]) as e:
        for sha in (signed, unsigned):
            await publish_commit(e, P, w, sha)
        # a forger with write access to etcd: the signed commit, other files, a checksum
        # that matches its own archive
        good = build(w, signed)
        c = unpack(good.payload)
        evil = pack(signed, good.commit_raw, type(c)({**c.files, "units/s.service": b"[Service]\nExecStart=/bin/sh -c evil\n"}, c.modes, c.links, c.root_tree))  # fmt: skip
        base = keys.revision_artifact(P, signed)
        await e.put(base + "chunks/0000", evil.payload)
        await e.put(base + "meta", meta_of(evil, 1))

        def renderer() -> Renderer:
            return Renderer(_no_git(tmp_path), FACTS, allowed_signers=signers,
                            artifacts=lambda rev: read(e, P, rev),
                            files_policy=NODE_POLICY)  # fmt: skip

        forged = await renderer().spec(signed)
        assert isinstance(forged, Rejection)
        assert forged.problems == (
            f"artifact of {signed[:12]} does not match its signed commit: "
            "units/ in the archive is not the signed commit's units/",
        )
        no_sig = await renderer().spec(unsigned)
        assert isinstance(no_sig, Rejection)
        assert no_sig.problems == (f"commit {unsigned[:12]} is not signed",)
        await publish(e, P, signed, good)  # the genuine artifact again
        ok = await renderer().spec(signed)
        assert isinstance(ok, NodeSpec) and ok.revision == signed


def _trace(e: Etcd) -> list[str]:
    """The unary etcd calls ``e`` makes from now on, by name (streams are not requests
    per revision: the lease keepalive stream lives as long as the agent)."""
    calls: list[str] = []
    orig = e._call

    async def traced(fn: Any, what: str) -> Any:
        calls.append(what)
        return await orig(fn, what)

    e._call = traced  # type: ignore[method-assign]
    return calls


def _agent(
    etcd: Etcd, ep: str, tmp: Path, source: str = "auto", role: Role = Role.MANAGER
) -> Agent:
    settings = AgentSettings(node="node-1", role=role, address="127.0.0.1",
                             repo=str(tmp / "no-such-remote.git"), branch="main",
                             state_dir=tmp / "state", etcd=(ep,), prefix=P, source=source,
                             files_policy=NODE_POLICY)  # fmt: skip
    engine = Engine(DrySystemd(tmp / "units"), tmp / "state", root=tmp / "root",
                    unit_dir=tmp / "units")  # fmt: skip
    return Agent(settings, etcd, engine)


@pytest.mark.parametrize("source", ["auto", "git"])
async def test_an_agent_converges_from_the_artifact_in_four_requests(
    etcd_server: EtcdServer, state_repo: StateRepo, tmp_path: Path, source: str
) -> None:
    goods = {k: v for k, v in GOOD.items() if k != "state/cluster.yaml"}
    sha = state_repo.commit(
        {**goods, "state/cluster.yaml": b"name: demo\nmanagers: 1\nprefix: /sk\n"}
    )
    async with await Etcd.connect([etcd_server.endpoint]) as e:
        await publish_commit(e, P, state_repo.work, sha)
        agent = _agent(e, etcd_server.endpoint, tmp_path, source)
        agent.lease = await e.lease(30)
        agent.control.absorb(keys.desired_revision(P).encode(), sha.encode())
        calls = _trace(e)
        res = await asyncio.wait_for(agent.reconcile(frozenset({"test"})), 30)
    assert res is not None
    if source == "git":  # the git path cannot reach the (absent) remote: degraded, retried
        assert res.status.state is NodeState.DEGRADED and res.status.error.startswith("git:")
        return
    assert (res.status.state, res.status.revision) == (NodeState.CONVERGED, sha)
    # the artifact read, the rollout gate's snapshot, the applying and the final status
    assert len(calls) <= 4 and calls.count("get_prefix") == 1, calls
    assert agent.source.fetches == 0 and not agent.source.dir.exists()
    assert agent.metrics.renders.labels("artifact")._value.get() == 1


CLUSTER = b"name: demo\nmanagers: 1\nprefix: /sk\n"


async def _publish_each(
    etcd_server: EtcdServer, repo: StateRepo, tmp: Path, trees: list[dict[str, bytes]]
) -> tuple[Agent, list[str], list[str]]:
    """A worker agent, converged on each of ``trees`` (GOOD with these changes) in turn; the
    revisions, and the etcd calls of its last pass."""
    goods = {k: v for k, v in GOOD.items() if k != "state/cluster.yaml"}
    shas = [repo.commit({**goods, "state/cluster.yaml": CLUSTER, **t}) for t in trees]
    async with await Etcd.connect([etcd_server.endpoint]) as e:
        agent = _agent(e, etcd_server.endpoint, tmp, role=Role.WORKER)
        agent.lease = await e.lease(30)
        for sha in shas:
            await publish_commit(e, P, repo.work, sha)
            agent.control.absorb(keys.desired_revision(P).encode(), sha.encode())
            calls = _trace(e)
            res = await asyncio.wait_for(agent.reconcile(frozenset({"test"})), 30)
            assert res is not None
            assert (res.status.state, res.status.revision) == (NodeState.CONVERGED, sha)
        last = list(calls)
        assert (await e.get_prefix(keys.rollout_slots_prefix(P)))[0] == []  # none left held
    return agent, shas, last


async def test_a_worker_moves_to_the_next_revision_in_three_requests(
    etcd_server: EtcdServer, state_repo: StateRepo, tmp_path: Path
) -> None:
    """Behind by one revision, a worker reads the artifact, takes its slot (with its applying
    status, the guards proving its watches current) and releases it with the final status:
    no read of the rollout keys first."""
    trees = [{"state/nodes/node-1.yaml": b"role: worker\n",
              "units/a.service": b"[Service]\nExecStart=/bin/true " + arg + b"\n"}
             for arg in (b"1", b"2")]  # fmt: skip
    _, _, calls = await _publish_each(etcd_server, state_repo, tmp_path, trees)
    assert calls == ["get_prefix", "create_first_absent", "put_and_release"], calls


async def test_a_revision_that_changes_nothing_here_is_reported_applied_without_a_slot(
    etcd_server: EtcdServer, state_repo: StateRepo, tmp_path: Path
) -> None:
    """A commit that touches only other nodes (here: a comment) is this node's revision too
    once rendered: it says so, takes no slot and touches nothing but its inventory."""
    trees = [{}, {"state/cluster.yaml": CLUSTER + b"# only a comment\n"}]
    agent, shas, calls = await _publish_each(etcd_server, state_repo, tmp_path, trees)
    assert calls == ["get_prefix", "put"], calls  # the artifact, the status: no slot
    assert agent.engine.inventory().revision == shas[1]
