"""The node agent (control layer): its worker, one reconcile pass, reports, metrics, HTTP.

The public names load on first use, so that importing the pure ``agent.policy`` by itself
does not start the worker's imports (asyncio, etcd, the apply engine).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.agent.agent import Agent, AgentSettings
    from reconciler.agent.passes import PassResult, run_pass
    from reconciler.agent.render import Renderer
    from reconciler.agent.workqueue import WorkQueue

_HOME = {
    "Agent": "reconciler.agent.agent",
    "AgentSettings": "reconciler.agent.agent",
    "PassResult": "reconciler.agent.passes",
    "Renderer": "reconciler.agent.render",
    "run_pass": "reconciler.agent.passes",
    "WorkQueue": "reconciler.agent.workqueue",
}

__all__ = ["Agent", "AgentSettings", "PassResult", "Renderer", "WorkQueue", "run_pass"]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
