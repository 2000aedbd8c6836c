"""Revision artifacts in etcd: built from a repository at publish time, read by nodes.

Keys under ``<prefix>/revisions/<sha>/`` (docs/etcd-keys.md): ``commit`` (the raw commit
object), ``chunks/NNNN`` (the archive, cut below etcd's 1.5 MiB request limit) and ``meta``
(JSON: format, commit, sha256, size, chunk count). ``meta`` is written last, in the same
transaction that moves ``desired/revision`` and deletes all but the newest ``keep``
artifacts, so a node either sees a whole artifact or none (and then falls back to git).

A node reads all of one revision's keys with ONE range request (``read``); ``assemble``
turns those keys into an ``Artifact`` (pure), ``reconciler.revisions.artifact.verify`` checks it.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aetcd import rpc
from aetcd.utils import prefix_range_end

from reconciler import keys
from reconciler.desired.tree import TRACKED_DIRS
from reconciler.errors import SourceError
from reconciler.revisions.artifact import (
    FORMAT,
    MAX_CONTENT_BYTES,
    MODE_EXEC,
    MODE_FILE,
    MODE_LINK,
    Artifact,
    ArtifactMismatch,
    Contents,
    pack,
    verify,
)

if TYPE_CHECKING:
    from reconciler.etcd.client import Etcd
    from reconciler.etcd.watch import KV

CHUNK_BYTES = 1024 * 1024  # under etcd's default 1.5 MiB request limit, with room for keys
INLINE_BYTES = 1024 * 1024  # up to this much archive travels in the publishing transaction
DEFAULT_KEEP = 5


class ArtifactUnavailable(SourceError):
    """This commit cannot travel as an artifact (nodes will fetch it with git)."""


def build(repo: str | Path, sha: str) -> Artifact:
    """The artifact of commit ``sha`` of the git repository ``repo`` (bare or not), read
    from its object database with dulwich, then checked exactly as a node will check it."""
    from dulwich.errors import NotGitRepository
    from dulwich.objects import Commit, ObjectID, Tree
    from dulwich.repo import Repo

    try:
        r = Repo.discover(str(repo))  # a work tree's subdirectory too, as git -C does
    except NotGitRepository:
        raise ArtifactUnavailable(f"{repo} is not a git repository") from None
    with r:
        store = r.object_store
        try:
            kind, commit_raw = store.get_raw(ObjectID(sha.encode()))
        except (KeyError, ValueError):
            raise ArtifactUnavailable(f"commit {sha[:12]} is not in {repo}") from None
        if kind != Commit.type_num:
            raise ArtifactUnavailable(f"{sha[:12]} is not a commit")
        commit = Commit.from_string(commit_raw)
        _, root_raw = store.get_raw(commit.tree)
        files: dict[str, bytes] = {}
        modes: dict[str, int] = {}
        links: dict[str, str] = {}
        total = 0

        def walk(path: str, mode: int, oid: bytes) -> None:
            nonlocal total
            if stat.S_ISDIR(mode):
                tree = store[ObjectID(oid)]
                assert isinstance(tree, Tree)
                for e in tree.items():
                    walk(f"{path}/{e.path.decode(errors='surrogateescape')}", e.mode, e.sha)
                return
            if mode not in (MODE_FILE, MODE_EXEC, MODE_LINK):
                raise ArtifactUnavailable(f"{path}: git mode {mode:o} (a submodule?) cannot "
                                          "travel in an artifact")  # fmt: skip
            _, data = store.get_raw(ObjectID(oid))
            total += len(data)
            if total > MAX_CONTENT_BYTES:
                raise ArtifactUnavailable(f"state/units/files exceed {MAX_CONTENT_BYTES} bytes")
            if mode == MODE_LINK:
                links[path] = data.decode(errors="surrogateescape")
            else:
                files[path], modes[path] = data, mode

        for entry in Tree.from_string(root_raw).items():
            name = entry.path.decode(errors="surrogateescape")
            if name in TRACKED_DIRS:
                walk(name, entry.mode, entry.sha)
    art = pack(sha, commit_raw, Contents(files, modes, links, root_raw))
    try:
        verify(art, sha)
    except ArtifactMismatch as e:  # e.g. a legacy file mode git itself would not write today
        raise ArtifactUnavailable(f"commit {sha[:12]}: {e}") from None
    return art


def chunks_of(payload: bytes, size: int = CHUNK_BYTES) -> list[bytes]:
    return [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]


def meta_of(art: Artifact, chunks: int) -> bytes:
    doc = {"format": FORMAT, "commit": art.commit, "sha256": art.sha256,
           "size": len(art.payload), "chunks": chunks}  # fmt: skip
    return json.dumps(doc, sort_keys=True).encode()


def to_drop(listed: Sequence[KV], prefix: str, keep_new: str, keep: int) -> list[str]:
    """Pure: the commits whose artifacts go, given the keys under ``revisions/`` (oldest
    first by the creation of their ``meta``); ``keep_new`` is being published now. A prefix
    with no ``meta`` (a publish that died before its transaction) goes once it is older
    than the oldest artifact kept (or than the newest one, when none is kept)."""
    base = keys.revisions_prefix(prefix).encode()
    metas: dict[str, int] = {}
    first_seen: dict[str, int] = {}
    for kv in listed:
        sha, _, leaf = kv.key[len(base) :].decode(errors="replace").partition("/")
        first_seen[sha] = min(first_seen.get(sha, kv.create_revision), kv.create_revision)
        if leaf == "meta":
            metas[sha] = kv.create_revision
    others = sorted((rev, sha) for sha, rev in metas.items() if sha != keep_new)
    n_drop = max(0, len(others) - max(0, keep - 1))
    drop = [sha for _, sha in others[:n_drop]]
    kept = [rev for rev, _ in others[n_drop:]]
    # an in-flight publish is not cut short by the one whose transaction lands first
    threshold = min(kept) if kept else max(metas.values(), default=0)
    for sha, rev in first_seen.items():
        if sha not in metas and sha != keep_new and rev < threshold:
            drop.append(sha)
    return sorted(drop)


async def publish(
    etcd: Etcd,
    prefix: str,
    sha: str,
    art: Artifact | None,
    *,
    keep: int = DEFAULT_KEEP,
    compare: Sequence[rpc.Compare] = (),
    also: Mapping[str, str] | None = None,
) -> bool:
    """Store ``art`` (when given) and make ``sha`` the desired revision in one transaction
    that also drops all but the newest ``keep`` artifacts and writes ``also`` (a rollback
    record). False if ``compare`` failed."""

    def put(key: str, value: bytes | str) -> rpc.RequestOp:
        v = value.encode() if isinstance(value, str) else value
        return rpc.RequestOp(request_put=rpc.PutRequest(key=key.encode(), value=v))

    ops: list[rpc.RequestOp] = []
    if art is not None:
        base = keys.revision_artifact(prefix, sha)
        chunks = chunks_of(art.payload)
        chunk_ops = [put(f"{base}chunks/{i:04}", c) for i, c in enumerate(chunks)]
        if len(art.payload) > INLINE_BYTES:
            for op in chunk_ops:  # each alone fits the request limit; meta comes last
                await etcd.txn([op], what="put artifact chunk")
        else:
            ops += chunk_ops
        ops += [put(f"{base}commit", art.commit_raw), put(f"{base}meta", meta_of(art, len(chunks)))]
        listed, _ = await etcd.get_prefix(keys.revisions_prefix(prefix), keys_only=True)
        for old in to_drop(listed, prefix, sha, keep):
            k = keys.revision_artifact(prefix, old).encode()
            ops.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                key=k, range_end=prefix_range_end(k))))  # fmt: skip
    ops.append(put(keys.desired_revision(prefix), sha))
    ops += [put(k, v) for k, v in (also or {}).items()]
    resp = await etcd.txn(ops, compare, what="publish")
    return bool(resp.succeeded)


async def read(etcd: Etcd, prefix: str, sha: str) -> Artifact | None:
    """One range request: ``sha``'s artifact, or None when none was stored.

    The read is serializable: an artifact never changes once written (its keys are named
    by the commit and checked against it), so a grpc-proxy may answer it from its cache —
    a thousand nodes reading one revision cost etcd a handful of reads, not a thousand. A
    member that has not applied the publish yet answers "none": only then is the read
    repeated, linearizable."""
    base = keys.revision_artifact(prefix, sha)
    kvs, _ = await etcd.get_prefix(base, serializable=True)
    if not kvs:
        kvs, _ = await etcd.get_prefix(base)
    return assemble(base, {kv.key: kv.value for kv in kvs})


def assemble(base: str, values: dict[bytes, bytes]) -> Artifact | None:
    """Pure: the artifact from its keys; ArtifactMismatch when they do not add up."""
    b = base.encode()
    meta_raw = values.get(b + b"meta")
    if meta_raw is None:
        return None
    try:
        meta = json.loads(meta_raw)
        n, fmt = int(meta["chunks"]), int(meta["format"])
        commit, sha256, size = str(meta["commit"]), str(meta["sha256"]), int(meta["size"])
    except (ValueError, KeyError, TypeError) as e:
        raise ArtifactMismatch(f"artifact meta is malformed: {e}") from None
    if not 0 < n <= len(values) or size < 0:  # never trust a count to size a loop
        raise ArtifactMismatch(f"artifact meta is malformed: {n} chunks, {size} bytes")
    if fmt != FORMAT:
        raise ArtifactMismatch(f"artifact format {fmt} is not {FORMAT}: upgrade this agent")
    parts = [values.get(b + f"chunks/{i:04}".encode()) for i in range(n)]
    missing = [i for i, p in enumerate(parts) if p is None]
    commit_raw = values.get(b + b"commit")
    if missing or commit_raw is None:
        raise ArtifactMismatch(f"artifact incomplete: chunks {missing} or commit missing")
    payload = b"".join(p for p in parts if p is not None)
    if len(payload) != size:
        raise ArtifactMismatch(f"artifact is {len(payload)} bytes, meta says {size}")
    return Artifact(commit, commit_raw, payload, sha256)


async def publish_commit(
    etcd: Etcd,
    prefix: str,
    repo: str | Path,
    sha: str,
    *,
    keep: int = DEFAULT_KEEP,
    compare: Sequence[rpc.Compare] = (),
    also: Mapping[str, str] | None = None,
) -> tuple[bool, str]:
    """The one call publishers make once ``sha`` is validated (and its signature checked):
    build its artifact from ``repo`` and move ``desired/revision`` to it. Returns (moved,
    what happened to the artifact); a commit that cannot travel as one is still published,
    and nodes fetch it with git."""
    import asyncio

    art: Artifact | None = None
    note = "no artifact stored (--keep-artifacts 0): nodes fetch it with git"
    if keep > 0:
        try:
            art = await asyncio.to_thread(build, repo, sha)
            note = f"artifact {len(art.payload)} bytes, sha256 {art.sha256[:12]}"
        except ArtifactUnavailable as e:
            note = f"no artifact ({e}): nodes fetch it with git"
    moved = await publish(etcd, prefix, sha, art, keep=max(keep, 1), compare=compare, also=also)
    return moved, note
