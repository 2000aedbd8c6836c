"""Revision artifacts, pure: packing is deterministic, and an archive that is not exactly the
signed commit's tree is refused, whichever part of it was changed. Built from real commits."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.desired import RepoTree, render
from reconciler.errors import InvalidDesiredState
from reconciler.etcd.watch import KV
from reconciler.models import NodeFacts, NodeName, NodeSpec, Role
from reconciler.revisions.artifact import (
    MODE_EXEC,
    ROOT_TREE,
    Artifact,
    ArtifactMismatch,
    Contents,
    pack,
    unpack,
    verify,
)
from reconciler.revisions.store import ArtifactUnavailable, assemble, build, chunks_of, to_drop
from reconciler.source import read_commit
from tests.fixtures.gitrepo import StateRepo, git, make_state_repo
from tests.test_validate import GOOD

FACTS = NodeFacts(NodeName("node-1"), Role.MANAGER, "10.0.0.1", ("127.0.0.1:2379",))


def _repack(art: Artifact, change: Callable[[Contents], Contents]) -> Artifact:
    """``art`` with its contents changed and a consistent checksum (what a forger makes)."""
    forged = pack(art.commit, art.commit_raw, change(unpack(art.payload)))
    return forged


def _with_file(c: Contents, path: str, data: bytes | None) -> Contents:
    files, modes = dict(c.files), dict(c.modes)
    if data is None:
        files.pop(path, None)
        modes.pop(path, None)
    else:
        files[path], modes[path] = data, modes.get(path, 0o100644)
    return dataclasses.replace(c, files=files, modes=modes)


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> tuple[StateRepo, str, str]:
    repo = make_state_repo(tmp_path_factory.mktemp("art"), dict(GOOD))
    first = git(repo.work, "rev-parse", "HEAD")
    repo.symlink("files/link.env", "x.env")
    second = repo.commit({"units/a.service": "[Service]\nExecStart=/bin/false\n"}, "second")
    return repo, first, second


def test_packing_is_deterministic_and_round_trips(two: tuple[StateRepo, str, str]) -> None:
    repo, _, sha = two
    a, b = build(repo.work, sha), build(repo.remote, sha)  # work clone or bare: same bytes
    assert a == b and a.sha256 == hashlib.sha256(a.payload).hexdigest()
    tree = verify(a, sha)
    assert tree == read_commit(repo.work, sha)
    assert tree.links == {"files/link.env": "x.env"}


MISMATCHES: list[tuple[str, Callable[[Artifact, Artifact], Artifact], str]] = [
    ("one byte of a unit changed",
     lambda a, _: _repack(a, lambda c: _with_file(c, "units/a.service", b"[Service]\nX\n")),
     "units/ in the archive is not the signed commit's units/"),
    ("a file added", lambda a, _: _repack(a, lambda c: _with_file(c, "state/extra.yaml", b"x")),
     "state/ in the archive"),
    ("a file dropped", lambda a, _: _repack(a, lambda c: _with_file(c, "files/x.env", None)),
     "files/ in the archive"),
    ("a mode flipped", lambda a, _: _repack(a, lambda c: dataclasses.replace(
        c, modes={**c.modes, "units/b.service": MODE_EXEC})), "units/ in the archive"),
    ("another commit's tree under this commit",
     lambda a, other: dataclasses.replace(other, commit=a.commit, commit_raw=a.commit_raw),
     "root tree is not the commit's tree"),
    ("another commit object", lambda a, other: dataclasses.replace(a, commit_raw=other.commit_raw),
     "commit object is"),
    ("checksum off", lambda a, _: dataclasses.replace(a, sha256="0" * 64), "checksum"),
    ("payload truncated", lambda a, _: dataclasses.replace(
        a, payload=a.payload[:-9], sha256=hashlib.sha256(a.payload[:-9]).hexdigest()),
     "truncated"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "forge", "why"), MISMATCHES, ids=[m[0] for m in MISMATCHES])
def test_an_artifact_that_is_not_the_signed_tree_is_refused(
    two: tuple[StateRepo, str, str], name: str, forge: Callable[[Artifact, Artifact], Artifact],
    why: str,
) -> None:  # fmt: skip
    repo, first, second = two
    a, other = build(repo.work, second), build(repo.work, first)
    verify(a, second)  # the genuine one passes
    with pytest.raises(ArtifactMismatch, match=why):
        verify(forge(a, other), second)


def _tar(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue())


@pytest.mark.parametrize(("members", "why"), [
    ([(ROOT_TREE, b""), ("README", b"x")], "outside state/ units/ files/"),
    ([(ROOT_TREE, b""), ("state/../x", b"x")], "outside"),
    ([("state/a", b"x")], f"lacks {ROOT_TREE}"),
    ([(ROOT_TREE, b""), ("state/a", b"x"), ("state/a", b"y")], "twice"),
])  # fmt: skip
def test_unpack_refuses_what_a_packer_never_writes(
    members: list[tuple[str, bytes]], why: str
) -> None:
    with pytest.raises(ArtifactMismatch, match=why):
        unpack(_tar(members))


def test_an_archive_that_inflates_past_any_tree_is_refused_unread() -> None:
    bomb = gzip.compress(b"\0" * (80 * 1024 * 1024))  # 80 KiB on the wire
    with pytest.raises(ArtifactMismatch, match="inflates past"):
        unpack(bomb)


def test_assemble_and_retention_are_pure() -> None:
    base = "/p/revisions/ab/"
    art = Artifact("ab", b"c", b"0123456789", "s")
    assert assemble(base, {}) is None  # no meta: not published as an artifact, use git
    vals = {b"/p/revisions/ab/meta": b'{"format": 1, "commit": "ab", "sha256": "s", '
            b'"size": 10, "chunks": 3}', b"/p/revisions/ab/commit": b"c"}  # fmt: skip
    for i, c in enumerate(chunks_of(art.payload, 4)):
        vals[f"{base}chunks/{i:04}".encode()] = c
    assert assemble(base, vals) == art
    del vals[b"/p/revisions/ab/chunks/0001"]
    with pytest.raises(ArtifactMismatch, match=r"incomplete: chunks \[1\]"):
        assemble(base, vals)

    def kv(key: str, rev: int) -> KV:
        return KV(f"/p/revisions/{key}".encode(), b"", rev, rev, 0)

    listed = [kv("a/meta", 5), kv("b/meta", 9), kv("c/meta", 7), kv("d/chunks/0000", 2),
              kv("e/chunks/0000", 8)]  # fmt: skip
    # keep 3 = the new one + the two newest (b, c); d died before its meta and is older
    # than every artifact kept; e is newer than c, so it may be a publish still in flight
    assert to_drop(listed, "/p", "new", 3) == ["a", "d"]
    assert to_drop(listed, "/p", "new", 1) == ["a", "b", "c", "d", "e"]
    assert to_drop(listed, "/p", "b", 2) == ["a", "d"]  # republishing b keeps b and c


def test_a_submodule_cannot_travel_as_an_artifact(tmp_path: Path) -> None:
    repo = make_state_repo(tmp_path / "r", dict(GOOD))
    sub = make_state_repo(tmp_path / "s", {"x": "y"})
    sha = git(sub.work, "rev-parse", "HEAD")
    git(repo.work, "update-index", "--add", "--cacheinfo", f"160000,{sha},files/sub")
    git(repo.work, "commit", "-q", "-m", "submodule")
    with pytest.raises(ArtifactUnavailable, match="files/sub: git mode 160000"):
        build(repo.work, git(repo.work, "rev-parse", "HEAD"))


NAME = st.from_regex(r"[a-z0-9é][a-z0-9._é-]{0,10}", fullmatch=True).filter(
    lambda s: s not in (".", "..")
)
PATH = st.lists(NAME, min_size=1, max_size=3).map("/".join)
EXTRA = st.dictionaries(
    st.tuples(st.sampled_from(["files", "state", "units"]), PATH).map("/".join),
    st.tuples(st.binary(max_size=300), st.booleans()), max_size=6,
)  # fmt: skip


def _outcome(tree: RepoTree) -> NodeSpec | tuple[str, ...]:
    try:
        return render(tree, FACTS)
    except InvalidDesiredState as e:
        return tuple(str(p) for p in e.problems)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(extra=EXTRA, drop=st.sets(st.sampled_from(sorted(GOOD)), max_size=2),
       link=st.one_of(st.none(), st.sampled_from(["x.env", "../units/a.service", "/etc/x"])))  # fmt: skip
def test_artifact_and_git_render_the_same_spec(
    tmp_path_factory: pytest.TempPathFactory, extra: dict[str, tuple[bytes, bool]],
    drop: set[str], link: str | None,
) -> None:  # fmt: skip
    paths = sorted(extra)
    if any(q.startswith(p + "/") for p in paths for q in paths) or any(
        p.startswith(tuple(g + "/" for g in GOOD)) for p in paths
    ):
        return  # a path that is also a directory cannot be committed
    repo = make_state_repo(tmp_path_factory.mktemp("prop"), {k: v for k, v in GOOD.items()
                                                               if k not in drop})  # fmt: skip
    for rel, (data, exe) in extra.items():
        path = repo.work / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if exe else 0o644)
    if link is not None and not (repo.work / "files/link.env").exists():
        repo.symlink("files/link.env", link)
    sha = repo.commit({}, "random")
    from_git, from_artifact = read_commit(repo.work, sha), verify(build(repo.work, sha), sha)
    assert from_artifact == from_git
    assert _outcome(from_artifact) == _outcome(from_git)
    assert repr(_outcome(from_artifact)) == repr(_outcome(from_git))


@settings(max_examples=200, deadline=None)
@given(payload=st.one_of(st.binary(max_size=600), st.binary(max_size=400).map(gzip.compress)))
def test_unpack_never_fails_with_anything_but_a_mismatch(payload: bytes) -> None:
    try:
        got = unpack(payload)
    except ArtifactMismatch as e:
        assert str(e)  # says what is wrong
        return
    assert all(p.split("/")[0] in ("state", "units", "files") for p in [*got.files, *got.links])


@settings(max_examples=200, deadline=None)
@given(meta=st.one_of(st.binary(max_size=80), st.dictionaries(
    st.sampled_from(["format", "commit", "sha256", "size", "chunks"]),
    st.one_of(st.integers(-2, 3), st.just(10**12), st.text(max_size=4), st.none()), max_size=5,
).map(lambda d: json.dumps(d).encode())))  # fmt: skip
def test_assemble_never_fails_with_anything_but_a_mismatch(meta: bytes) -> None:
    base = "/p/revisions/ab/"
    try:
        got = assemble(base, {b"/p/revisions/ab/meta": meta, b"/p/revisions/ab/commit": b"c"})
    except ArtifactMismatch as e:
        assert str(e).startswith("artifact")
        return
    assert got is None or json.loads(meta)["size"] == len(got.payload)
