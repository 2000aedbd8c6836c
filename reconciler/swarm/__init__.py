"""Docker Swarm membership (control layer over the pure ``swarm.plan`` decisions).

The public names load on first use, so that importing the pure ``swarm.plan`` by itself
does not start the control layer's imports (asyncio, etcd, the Docker Engine client).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.swarm.agent import SwarmLink
    from reconciler.swarm.membership import Membership, MembershipStatus, run_membership

_HOME = {
    "Membership": "reconciler.swarm.membership",
    "MembershipStatus": "reconciler.swarm.membership",
    "run_membership": "reconciler.swarm.membership",
    "SwarmLink": "reconciler.swarm.agent",
}

__all__ = ["Membership", "MembershipStatus", "SwarmLink", "run_membership"]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
