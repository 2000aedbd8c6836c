"""The node's spec of a revision: from its artifact (or git), verified, rendered, cached.

The agent's ``Renderer`` fetches a revision once (one etcd read of its artifact, git only as
the fallback), proves the content is the signed commit's tree, checks the signature against
the node's allowed signers, renders the node's spec and applies the node's own files policy;
a revision that fails any of it is a ``Rejection`` with ``path:line:`` problems, never an
exception. ``SpecCache`` keeps the last few, so a resync re-renders nothing.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from reconciler.errors import InvalidDesiredState
from reconciler.models import NodeFacts, NodeSpec, Role
from reconciler.revisions.artifact import ArtifactMismatch
from reconciler.source import is_full_sha

if TYPE_CHECKING:
    from reconciler.desired.filespolicy import FilesPolicy
    from reconciler.revisions.artifact import Artifact
    from reconciler.source import GitSource

FetchArtifact = Callable[[str], Awaitable["Artifact | None"]]  # one etcd read per revision


@dataclass(frozen=True, slots=True)
class Rejection:
    revision: str
    problems: tuple[str, ...]

    @property
    def summary(self) -> str:
        first = self.problems[0] if self.problems else "rejected"
        more = f" (+{len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        return f"revision {self.revision[:12]} rejected: {first}{more}"


@dataclass
class SpecCache:
    """Rendered specs (or their rejection) by revision: a resync re-renders nothing."""

    size: int = 8
    items: OrderedDict[str, NodeSpec | Rejection] = field(default_factory=OrderedDict)

    def get(self, rev: str) -> NodeSpec | Rejection | None:
        v = self.items.get(rev)
        if v is not None:
            self.items.move_to_end(rev)
        return v

    def put(self, rev: str, v: NodeSpec | Rejection) -> None:
        self.items[rev] = v
        self.items.move_to_end(rev)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


class Renderer:
    """Fetches (once per revision), verifies and renders revisions for one node.

    With ``artifacts`` (one etcd read of the revision's artifact, None when there is none)
    a revision is rendered from its artifact, proven to be the signed commit's tree, and git
    is the fallback only for revisions published without one.
    """

    def __init__(
        self,
        source: GitSource,
        facts: NodeFacts,
        *,
        allowed_signers: Path | None = None,
        gnupg_home: Path | None = None,
        prefix: str = "",
        files_policy: FilesPolicy | None = None,
        artifacts: FetchArtifact | None = None,
        on_render: Callable[[str], None] | None = None,
    ) -> None:
        from reconciler.desired.filespolicy import FilesPolicy

        self.files_policy = files_policy or FilesPolicy()  # the node's, never the commit's
        self.source = source
        self.facts = facts
        self.prefix = prefix  # the etcd prefix in use: a commit for another one is rejected
        self.allowed_signers = allowed_signers
        self.gnupg_home = gnupg_home
        self.artifacts = artifacts
        self.on_render = on_render  # called with "artifact" or "git" per revision rendered
        self.cache = SpecCache()
        self.swarm_roles: dict[str, dict[str, Role | None]] = {}  # by revision, for membership

    @property
    def verifying(self) -> bool:
        return self.allowed_signers is not None or self.gnupg_home is not None

    async def spec(self, revision: str) -> NodeSpec | Rejection:
        """The spec of ``revision``; raises SourceError when git cannot provide it."""
        cached = self.cache.get(revision)
        if cached is not None:
            return cached
        art: Artifact | None = None
        if self.artifacts is not None and is_full_sha(revision):
            try:
                art = await self.artifacts(revision)
            except ArtifactMismatch as e:
                out: NodeSpec | Rejection = Rejection(revision, (_mismatch(revision, e),))
                self.cache.put(revision, out)
                return out
        out = await asyncio.to_thread(self._render, revision, art)
        self.cache.put(revision, out)
        return out

    def _render(self, revision: str, art: Artifact | None = None) -> NodeSpec | Rejection:
        from reconciler.desired import filespolicy, load_state
        from reconciler.revisions.publish import prefix_mismatch

        if art is not None:
            from reconciler.revisions.artifact import verify
            from reconciler.revisions.commitsig import verify_commit

            try:
                tree = verify(art, revision)
            except ArtifactMismatch as e:
                return Rejection(revision, (_mismatch(revision, e),))
            # the signature is the commit's; ``verify`` proved the files are that commit's
            why = (
                verify_commit(art.commit_raw, self.allowed_signers, self.gnupg_home)
                if self.verifying
                else None
            )
        else:
            sha = self.source.ensure_commit(revision)
            try:
                tree = self.source.tree(sha)  # SourceError (retried) if git does not have it
            except InvalidDesiredState as e:  # the commit itself is too big
                return Rejection(revision, tuple(str(p) for p in e.problems))
            why = (
                self.source.verify(sha, self.allowed_signers, self.gnupg_home)
                if self.verifying
                else None
            )
        if self.on_render is not None:
            self.on_render("git" if art is None else "artifact")
        if why is not None:
            return Rejection(revision, (why,))
        try:
            state = load_state(tree)
            other_cluster = prefix_mismatch(state, self.prefix) if self.prefix else ""
            if other_cluster:
                return Rejection(revision, (other_cluster,))
            spec = filespolicy.render_allowed(state, self.facts, self.files_policy)
        except InvalidDesiredState as e:
            return Rejection(revision, tuple(str(p) for p in e.problems))
        # swarm membership: once state/nodes lists nodes, that list is the membership (a node
        # taken out leaves); a cluster that lists none lets every node join with its role
        roles = {n: Role(nf.role) if nf.role else None for n, nf in state.nodes.items()}
        self.swarm_roles[revision] = roles or {self.facts.name: spec.role}
        return spec


def _mismatch(revision: str, e: ArtifactMismatch) -> str:
    return f"artifact of {revision[:12]} does not match its signed commit: {e}"
