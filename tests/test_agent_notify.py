"""A real agent process notifies a real webhook, and a hanging webhook never slows its passes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.etcd import EtcdServer
from tests.fixtures.webhook import HookServer
from tests.test_agent import SLEEP, Cluster, publish
from tests.test_agent import make_cluster as make_cluster  # the fixture, used by name

pytestmark = pytest.mark.slow


def pass_seconds(log: str, revision: str) -> float:
    """Duration of the pass that applied ``revision``, from the agent's own summary line."""
    for line in log.splitlines():
        if line.startswith("{"):
            rec = json.loads(line)
            if (
                rec.get("event") == "pass"
                and rec.get("actions")
                and rec.get("revision") == revision[:12]
            ):
                return float(rec["seconds"])
    raise AssertionError(f"no pass applied {revision[:12]}")


async def kind_arrives(hook: HookServer, kind: str, within: float = 20.0) -> dict[str, object]:
    """The first delivered event of ``kind`` (events are coalesced for ~2 s before sending)."""
    async with asyncio.timeout(within):
        while True:
            found = [b for b in hook.bodies() if isinstance(b, dict) and b.get("kind") == kind]
            if found:
                return found[0]
            await asyncio.sleep(0.1)


async def test_webhook_events_and_a_hanging_webhook_does_not_slow_passes(
    etcd_server: EtcdServer, make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    async with HookServer() as hook:
        url_file = tmp_path / "hook-url"
        url_file.write_text(hook.url() + "\n")
        c = make_cluster(etcd_server.endpoint, {"n1": "worker"})
        cluster_yaml = (c.repo.work / "state/cluster.yaml").read_text()
        notify = f"notify:\n  - {{type: webhook, url_file: {url_file}, min_severity: info}}\n"

        async def roll(
            content: str, msg: str, extra: dict[str, str | bytes | None] | None = None
        ) -> str:
            rev = await asyncio.to_thread(
                c.repo.commit, {"units/a.service": content, **(extra or {})}, msg
            )
            await asyncio.to_thread(publish, c.endpoints, rev)
            await asyncio.to_thread(c.converged_on, rev)
            return rev

        rev1 = await roll(
            SLEEP + "Environment=R=1\n", "notify on", {"state/cluster.yaml": cluster_yaml + notify}
        )
        applied = await kind_arrives(hook, "revision_applied")
        assert applied["node"] == "n1" and applied["revision"] == rev1
        assert "n1" in str(applied["text"]) and rev1[:7] in str(applied["text"])
        healthy = [pass_seconds(c.agents["n1"].log(), rev1)]
        rev2 = await roll(SLEEP + "Environment=R=2\n", "healthy webhook")
        healthy.append(pass_seconds(c.agents["n1"].log(), rev2))

        hook.mode = "hang"  # from now on every delivery hangs until the server closes
        seen = len(hook.received)
        hanging = []
        for i in (3, 4, 5):
            rev = await roll(SLEEP + f"Environment=R={i}\n", f"hanging webhook {i}")
            hanging.append(pass_seconds(c.agents["n1"].log(), rev))
        await hook.wait_for(seen + 1, within=15)  # the agent did try the hanging webhook
        # A pass that waited on the webhook would take its 5 s request timeout at least.
        assert max(hanging) < max(healthy) + 1.0, (healthy, hanging)
        assert c.agents["n1"].alive()
