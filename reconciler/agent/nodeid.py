"""Node identity: one live agent per node name.

Two agents started with the same ``--node`` would both apply and overwrite each other's
status. Before its heartbeat starts, an agent looks at ``<prefix>/nodes/<node>/alive``: a key
whose lease is still being kept alive belongs to a live agent, and this one refuses to
start, naming the holder. A key left by an agent that died is not kept alive: its lease
only counts down, and the new agent waits for it to expire (at most its TTL) instead of
refusing, so a restart after a crash still comes up by itself.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

from reconciler import keys
from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.etcd import Etcd


def _holder(value: bytes) -> str:
    try:
        doc = json.loads(value)
        return f"pid {doc.get('pid')} since {doc.get('since')}"
    except (ValueError, AttributeError):
        return value.decode(errors="replace")[:80]


async def ensure_sole_agent(etcd: Etcd, prefix: str, node: str, *, poll: float = 1.0) -> None:
    """Return once no live agent holds ``node``; raise UsageError naming a live holder."""
    key = keys.node_alive(prefix, node)
    kv = await etcd.get(key)
    if kv is None or kv.lease == 0:
        return
    ttl = await etcd.lease_time_to_live(kv.lease)
    if ttl is None:
        return
    left, granted = ttl
    deadline = time.monotonic() + granted + 2 * poll
    while time.monotonic() < deadline:
        await asyncio.sleep(poll)
        now = await etcd.lease_time_to_live(kv.lease)
        if now is None:
            return  # expired: its agent was gone
        if now[0] > left:  # refreshed: someone keeps it alive
            raise UsageError(
                f"node {node} is already run by a live agent ({_holder(kv.value)}, lease "
                f"{kv.lease:x} on {key}): stop that agent first, or give this one another --node"
            )
        left = now[0]
    return
