"""What a node agent acts on from etcd, folded from its four control keys. Pure.

The agent watches exactly these keys (``Control.watched``), one narrow watch each: watching
the whole prefix would wake every agent for every other node's status write and every
rollout slot. Each event (or the first read, or a re-read after a compaction) goes
through ``Control.absorb``, which updates the values and says whether they changed, i.e.
whether a pass is needed. The values are read by the pass (``reconcile.run_pass``):

- ``desired``: ``<prefix>/desired/revision`` (None when unset or blank);
- ``paused``: ``<prefix>/nodes/<node>/pause`` exists and is not ``""``, ``0`` or ``false``;
- ``failed_revision`` / ``failed_info``: ``<prefix>/rollout/failed``, JSON
  ``{"revision", "node", "error", "at"}`` written by the node whose apply rolled back
  (unreadable JSON counts as no failure: it must never block a rollout by itself);
- ``halted``: ``<prefix>/rollout/halted`` exists (an operator's ``rollout halt``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from reconciler import keys

_OFF = ("", "0", "false")


@dataclass(slots=True)
class Control:
    prefix: str
    node: str
    desired: str | None = None
    paused: bool = False
    failed_revision: str | None = None
    failed_info: dict[str, Any] = field(default_factory=dict)
    failed_raw: bytes | None = None  # the marker's bytes as stored (None: absent)
    halted: bool = False

    def watched(self) -> tuple[str, ...]:
        """The keys this node acts on."""
        return (
            keys.desired_revision(self.prefix),
            keys.node_pause(self.prefix, self.node),
            keys.rollout_failed(self.prefix),
            keys.rollout_halted(self.prefix),
        )

    def absorb(self, key: bytes, value: bytes | None) -> bool:
        """Fold one key's value in (None: the key does not exist); True if a value it
        holds changed. Keys that are not control keys change nothing."""
        k = key.decode(errors="replace")
        v = (value or b"").decode(errors="replace").strip()
        if k == keys.desired_revision(self.prefix):
            desired = v or None
            changed, self.desired = desired != self.desired, desired
            return changed
        if k == keys.node_pause(self.prefix, self.node):
            paused = value is not None and v.lower() not in _OFF
            changed, self.paused = paused != self.paused, paused
            return changed
        if k == keys.rollout_failed(self.prefix):
            info = _json_object(v) if value else {}
            rev = info.get("revision")
            rev = str(rev) if rev else None
            changed = rev != self.failed_revision
            self.failed_revision, self.failed_info = rev, info if rev else {}
            self.failed_raw = value
            return changed
        if k == keys.rollout_halted(self.prefix):
            halted = value is not None
            changed, self.halted = halted != self.halted, halted
            return changed
        return False

    def failed_here(self, revision: str | None) -> str | None:
        """The error, if the rollout of ``revision`` failed on this very node: the node
        keeps saying so (degraded) until a new revision is published or it is resumed."""
        if revision is None or self.failed_revision != revision:
            return None
        if self.failed_info.get("node") != self.node:
            return None
        return str(self.failed_info.get("error") or "apply failed")


def _json_object(text: str) -> dict[str, Any]:
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}
