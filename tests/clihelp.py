"""Helpers for tests that run ``swarmkeeper`` as an operator does: a subprocess, real etcd.

``LiveNode`` plays what an agent leaves in etcd (an alive key on a kept-alive lease and a
status), on an event loop of its own so it stays alive while the test blocks on a
subprocess. ``check_schema`` validates a ``--json`` document against ``schemas/<kind>.json``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Coroutine
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import jsonschema

from reconciler import keys
from reconciler.etcd import Etcd, Lease
from reconciler.status import NodeState, NodeStatus, utcnow

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
P = "/swarmkeeper"
T = TypeVar("T")


def cli(
    *args: str, ep: str = "", env: dict[str, str] | None = None, cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:  # fmt: skip
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SWARMKEEPER_", "NO_COLOR"))}
    base["PYTHONPATH"] = str(ROOT)
    base["SWARMKEEPER_CONFIG"] = "/nonexistent/swarmkeeper.yaml"  # never the tester's own
    if ep:
        base["SWARMKEEPER_ETCD"] = ep
    return subprocess.run([sys.executable, "-m", "reconciler", *args], capture_output=True,
                          text=True, env={**base, **(env or {})}, timeout=timeout,
                          cwd=cwd or ROOT)  # fmt: skip


@cache
def _validator(kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{kind}.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def check_schema(text: str, kind: str) -> dict[str, Any]:
    """Parse one JSON document, check its version and kind, validate it; return it."""
    doc: dict[str, Any] = json.loads(text)
    assert doc["apiVersion"] == "swarmkeeper/v1", doc
    assert doc["kind"] == kind, doc
    _validator(kind).validate(doc)
    return doc


class LiveNode:
    """Agents' keys in etcd, written from a loop thread that keeps their leases alive."""

    def __init__(self, ep: str) -> None:
        self.ep = ep
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.etcd: Etcd = self.run(Etcd.connect([ep]))
        self.leases: dict[str, Lease] = {}

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def put(self, key: str, value: str) -> None:
        self.run(self.etcd.put(key, value))

    def delete(self, key: str) -> None:
        self.run(self.etcd.delete(key))

    def alive(self, node: str) -> None:
        async def go() -> None:
            lease = await self.etcd.lease(5)
            self.leases[node] = lease
            await self.etcd.put(keys.node_alive(P, node), "{}", lease=lease)

        self.run(go())

    def report(self, node: str, state: NodeState, revision: str, desired: str,
               role: str = "manager", **extra: Any) -> None:  # fmt: skip
        st = NodeStatus(node=node, role=role, state=state, revision=revision, desired=desired,
                        updated_at=utcnow(), **extra)  # fmt: skip
        self.put(keys.node_status(P, node), st.to_json())

    def close(self) -> None:
        self.run(self.etcd.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
