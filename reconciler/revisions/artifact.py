"""Revision artifacts: one commit's ``state/``, ``units/`` and ``files/`` as a signed-checkable blob.

A publisher packs what nodes read of a commit (the tracked dirs, with git's file modes) into a
gzip'd tar, next to the raw root tree object; etcd carries it with the raw commit object and
the archive's sha256. A node then needs no git at all, yet trusts nothing it cannot check:

1. the archive's sha256 is the one recorded (a torn or corrupted read);
2. the raw commit object hashes to the revision's sha (so its signature covers this commit);
3. the raw root tree hashes to the commit's tree id (so it is the commit's root);
4. each tracked entry of that root tree is exactly what the archive holds: its git object id
   is recomputed from the archived files with dulwich (blobs, then trees up to the root
   entry), and a tracked name the root lacks must be absent from the archive too.

Entries of the root other than the tracked ones (README, CI files) are covered by step 3
without shipping their content. Everything here is pure: packing, unpacking and checking.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

from dulwich.objects import Blob, Commit, ObjectID, Tree

from reconciler.desired.tree import TRACKED_DIRS, RepoTree
from reconciler.models import Revision

ROOT_TREE = ".root-tree"  # archive member holding the raw root tree object
FORMAT = 1  # bumped if the archive's layout ever changes; nodes refuse formats they lack
MAX_CONTENT_BYTES = 64 * 1024 * 1024  # the same bound reconciler.source puts on a tree
MODE_FILE, MODE_EXEC, MODE_LINK, MODE_TREE = 0o100644, 0o100755, 0o120000, 0o040000


class ArtifactMismatch(Exception):
    """The artifact is not exactly the signed commit's tree: never render it."""


@dataclass(frozen=True, slots=True)
class Contents:
    """The tracked entries of one commit: regular files with their git modes, and links."""

    files: Mapping[str, bytes]
    modes: Mapping[str, int]  # path -> MODE_FILE | MODE_EXEC, for every path in ``files``
    links: Mapping[str, str]
    root_tree: bytes  # the raw root tree object (git's serialization)


@dataclass(frozen=True, slots=True)
class Artifact:
    """What etcd stores for one revision."""

    commit: str  # the full commit sha
    commit_raw: bytes  # the raw commit object, signature included
    payload: bytes  # gzip'd tar of the tracked entries plus ROOT_TREE
    sha256: str  # of ``payload``


def pack(commit: str, commit_raw: bytes, contents: Contents) -> Artifact:
    """A deterministic archive: sorted members, no times, owners or names that vary."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _add(tf, ROOT_TREE, contents.root_tree, 0o644)
        entries = sorted([*contents.files, *contents.links])
        for path in entries:
            if path in contents.links:
                info = _info(path)
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, contents.links[path], 0o777
                tf.addfile(info)
            else:
                mode = 0o755 if contents.modes.get(path) == MODE_EXEC else 0o644
                _add(tf, path, contents.files[path], mode)
    payload = gzip.compress(buf.getvalue(), compresslevel=6, mtime=0)
    return Artifact(commit, commit_raw, payload, hashlib.sha256(payload).hexdigest())


def _info(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


def _add(tf: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = _info(name)
    info.size, info.mode = len(data), mode
    tf.addfile(info, io.BytesIO(data))


def unpack(payload: bytes) -> Contents:
    """The archive's entries; ArtifactMismatch for anything a packer never writes."""
    files: dict[str, bytes] = {}
    modes: dict[str, int] = {}
    links: dict[str, str] = {}
    root: bytes | None = None
    total = 0
    try:
        raw = _gunzip(payload)
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tf:
            for m in tf:
                name = m.name
                if name in files or name in links or (name == ROOT_TREE and root is not None):
                    raise ArtifactMismatch(f"archive holds {name} twice")
                if name != ROOT_TREE and (
                    name.split("/", 1)[0] not in TRACKED_DIRS
                    or any(p in ("", ".", "..") for p in name.split("/"))
                ):
                    raise ArtifactMismatch(f"archive holds {name!r}, outside state/ units/ files/")
                if m.issym() and name != ROOT_TREE:
                    links[name] = m.linkname
                    continue
                if not m.isfile():
                    raise ArtifactMismatch(f"archive member {name} is neither file nor symlink")
                total += m.size
                if total > MAX_CONTENT_BYTES:
                    raise ArtifactMismatch(f"archive content exceeds {MAX_CONTENT_BYTES} bytes")
                f = tf.extractfile(m)
                data = f.read() if f is not None else b""
                if name == ROOT_TREE:
                    root = data
                else:
                    files[name] = data
                    modes[name] = MODE_EXEC if m.mode & 0o111 else MODE_FILE
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise ArtifactMismatch(f"archive is unreadable: {e}") from None
    if root is None:
        raise ArtifactMismatch(f"archive lacks {ROOT_TREE}")
    return Contents(files, modes, links, root)


def _gunzip(payload: bytes) -> bytes:
    """Decompress with a bound: a forged archive must not inflate past what a tree may hold."""
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
    limit = MAX_CONTENT_BYTES + MAX_CONTENT_BYTES // 8  # content plus tar headers
    raw = d.decompress(payload, limit)
    if d.unconsumed_tail or not d.eof:
        raise ArtifactMismatch(f"archive inflates past {limit} bytes, or is truncated")
    return raw


def verify(art: Artifact, revision: str) -> RepoTree:
    """The tree nodes render, once the artifact is proven to be ``revision``'s tree.

    Raises ArtifactMismatch saying which check failed. The signature is checked elsewhere
    (it needs ssh-keygen or gpg); it covers ``art.commit_raw``, which this ties to the files.
    """
    if hashlib.sha256(art.payload).hexdigest() != art.sha256:
        raise ArtifactMismatch("archive checksum (sha256) does not match")
    commit = parse_commit(art.commit_raw)
    if commit.id.decode() != revision or art.commit != revision:
        raise ArtifactMismatch(f"commit object is {commit.id.decode()[:12]}, not {revision[:12]}")
    contents = unpack(art.payload)
    try:
        root = Tree.from_string(contents.root_tree)
    except Exception as e:  # dulwich raises several types for a malformed object
        raise ArtifactMismatch(f"root tree object is malformed: {e}") from None
    if root.id != commit.tree:
        raise ArtifactMismatch("root tree is not the commit's tree")
    recorded = {e.path.decode(errors="surrogateescape"): (e.mode, e.sha) for e in root.items()}
    built = entry_ids(contents)
    for name in TRACKED_DIRS:
        if recorded.get(name) != built.get(name):
            raise ArtifactMismatch(f"{name}/ in the archive is not the signed commit's {name}/")
    return RepoTree(files=dict(contents.files), links=dict(contents.links),
                    revision=Revision(revision))  # fmt: skip


def parse_commit(raw: bytes) -> Commit:
    try:
        commit = Commit.from_string(raw)
        _ = commit.tree  # parsing is lazy: force it so a bad object fails here
    except Exception as e:  # dulwich raises several types for a malformed object
        raise ArtifactMismatch(f"commit object is malformed: {e}") from None
    return commit


def entry_ids(contents: Contents) -> dict[str, tuple[int, bytes]]:
    """(git mode, object id) of each tracked top-level entry, recomputed from the content."""
    root: dict[str, object] = {}  # name -> nested dict (a tree) or (mode, blob id)
    for path, data in contents.files.items():
        _place(root, path, (contents.modes.get(path, MODE_FILE), Blob.from_string(data).id))
    for path, target in contents.links.items():
        blob = Blob.from_string(target.encode(errors="surrogateescape"))
        _place(root, path, (MODE_LINK, blob.id))
    return {name: _entry(node) for name, node in root.items()}


def _place(root: dict[str, object], path: str, leaf: tuple[int, bytes]) -> None:
    *dirs, name = path.split("/")
    node = root
    for d in dirs:
        child = node.setdefault(d, {})
        if not isinstance(child, dict):
            raise ArtifactMismatch(f"{path}: a parent is also a file")
        node = child
    if name in node:
        raise ArtifactMismatch(f"{path} appears twice")
    node[name] = leaf


def _entry(node: object) -> tuple[int, bytes]:
    if isinstance(node, dict):
        tree = Tree()
        for name, child in node.items():
            mode, sha = _entry(child)
            tree.add(name.encode(errors="surrogateescape"), mode, ObjectID(sha))
        return MODE_TREE, tree.id
    assert isinstance(node, tuple)
    mode, sha = node
    assert isinstance(mode, int) and isinstance(sha, bytes)
    return mode, sha
