"""Revisions as nodes receive them: the signed artifact (pure core), its etcd store and the
signature check (shell), the one publish path (control).

Only the pure artifact's names are exported here, so importing this package never loads
etcd or subprocess code into the pure core; the other halves are imported by module path:
``revisions.store``, ``revisions.commitsig``, ``revisions.publish``.
"""

from reconciler.revisions.artifact import Artifact, ArtifactMismatch, pack, unpack, verify

__all__ = ["Artifact", "ArtifactMismatch", "pack", "unpack", "verify"]
