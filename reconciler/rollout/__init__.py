"""Safe rollout: the pure decision (``decide``) and its etcd-bound gate (control layer).

The public names load on first use, so that importing the pure ``rollout.decide`` by
itself does not start the gate's imports (asyncio, etcd).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.rollout.decide import Decision, RolloutView, Verdict, decide, view_from_kvs
    from reconciler.rollout.gate import RolloutGate, Slot

_HOME = {
    "Decision": "reconciler.rollout.decide",
    "RolloutView": "reconciler.rollout.decide",
    "Verdict": "reconciler.rollout.decide",
    "decide": "reconciler.rollout.decide",
    "view_from_kvs": "reconciler.rollout.decide",
    "RolloutGate": "reconciler.rollout.gate",
    "Slot": "reconciler.rollout.gate",
}

__all__ = ["Decision", "RolloutGate", "RolloutView", "Slot", "Verdict", "decide", "view_from_kvs"]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
