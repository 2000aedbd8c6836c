"""The agent's HTTP face on a real 127.0.0.1 server: health, metrics and the push webhook."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from reconciler.agent.http import make_app
from reconciler.agent.metrics import Metrics
from reconciler.revisions.publish import PublishRefused

SECRET = b"s3cret"
SHA = "a" * 40


class Publisher:
    def __init__(self, problems: list[str] | None = None) -> None:
        self.published: list[str] = []
        self.problems = problems or []
        self.deliveries: set[str] = set()

    async def __call__(self, rev: str, delivery: str) -> list[str]:
        if delivery in self.deliveries:
            raise PublishRefused(f"delivery {delivery} was already handled", replay=True)
        self.deliveries.add(delivery)
        if self.problems:
            return self.problems
        self.published.append(rev)
        return []


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, Publisher, Metrics]]:
    metrics = Metrics()
    metrics.passes.labels(outcome="converged").inc(3)
    metrics.set_applied(SHA, 1700000000.0)
    pub = Publisher()
    app = make_app(metrics, lambda: {"ok": True, "state": "converged"}, webhook_secret=SECRET,
                   branch="main", publish=pub)  # fmt: skip
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}", pub, metrics
    finally:
        await server.close()


def push(ref: str = "refs/heads/main", after: str = SHA) -> bytes:
    return json.dumps({"ref": ref, "after": after, "repository": {"name": "state"}}).encode()


_DELIVERIES = iter(range(1_000_000))


def github(body: bytes, secret: bytes = SECRET, delivery: str | None = None) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
        "Content-Type": "application/json",
        "X-GitHub-Delivery": delivery or f"gh-{next(_DELIVERIES)}",
    }


def gitea(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    return {
        "X-Gitea-Signature": hmac.new(secret, body, hashlib.sha256).hexdigest(),
        "Content-Type": "application/json",
        "X-Gitea-Delivery": f"gt-{next(_DELIVERIES)}",
    }


async def test_healthz_and_metrics(served: tuple[str, Publisher, Metrics]) -> None:
    url, _, _ = served
    async with aiohttp.ClientSession() as s:
        async with s.get(url + "/healthz") as r:
            assert r.status == 200 and (await r.json())["state"] == "converged"
        async with s.get(url + "/metrics") as r:
            text = await r.text()
    assert 'swarmkeeper_passes_total{outcome="converged"} 3.0' in text
    assert f'swarmkeeper_applied_revision_info{{revision="{SHA}"}} 1.0' in text
    assert "swarmkeeper_pass_duration_seconds_bucket" in text


@pytest.mark.parametrize(
    ("headers", "status", "published"),
    [
        (github(push()), 200, [SHA]),
        (gitea(push()), 200, [SHA]),
        (
            {
                "X-Gitlab-Token": SECRET.decode(),
                "Content-Type": "application/json",
                "X-Gitlab-Event-UUID": "gl-1",
            },
            200,
            [SHA],
        ),
        (github(push(), b"wrong"), 401, []),
        ({"X-Gitlab-Token": "wrong"}, 401, []),
        ({}, 401, []),
    ],
    ids=["github", "gitea", "gitlab", "github-bad-secret", "gitlab-bad-token", "unsigned"],
)
async def test_webhook_signatures(
    served: tuple[str, Publisher, Metrics],
    headers: dict[str, str],
    status: int,
    published: list[str],
) -> None:
    url, pub, _ = served
    async with (
        aiohttp.ClientSession() as s,
        s.post(url + "/hooks/git", data=push(), headers=headers) as r,
    ):
        assert r.status == status
    assert pub.published == published


async def test_webhook_ignores_other_branches_and_deletions(
    served: tuple[str, Publisher, Metrics],
) -> None:
    url, pub, _ = served
    async with aiohttp.ClientSession() as s:
        for body in (push(ref="refs/heads/dev"), push(after="0" * 40)):
            async with s.post(url + "/hooks/git", data=body, headers=github(body)) as r:
                assert r.status == 200 and "ignored" in await r.json()
        body = b"not json"
        async with s.post(url + "/hooks/git", data=body, headers=github(body)) as r:
            assert r.status == 400
    assert pub.published == []


async def test_webhook_reports_an_invalid_commit_without_publishing() -> None:
    pub = Publisher(["state/cluster.yaml:2: managers: managers must be 1, 3 or 5 (...), not 2"])
    app = make_app(Metrics(), lambda: {"ok": True}, webhook_secret=SECRET, publish=pub)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        body = push()
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"http://127.0.0.1:{server.port}/hooks/git", data=body, headers=github(body)
            ) as r,
        ):
            assert r.status == 422
            assert (await r.json())["problems"] == pub.problems
    finally:
        await server.close()
    assert pub.published == []


async def test_no_webhook_without_a_secret() -> None:
    app = make_app(Metrics(), lambda: {"ok": False}, publish=Publisher())
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.post(f"http://127.0.0.1:{server.port}/hooks/git", data=push()) as r:
                assert r.status in (404, 405)
            async with s.get(f"http://127.0.0.1:{server.port}/healthz") as r:
                assert r.status == 503
    finally:
        await server.close()


@pytest.mark.parametrize(
    ("change", "status"),
    [
        ({"Content-Type": "application/x-www-form-urlencoded"}, 415),
        ({"Content-Type": "text/plain"}, 415),
        ({"X-GitHub-Delivery": ""}, 400),
        ({"X-GitHub-Delivery": "a/b"}, 400),
    ],
    ids=["form", "text", "no-delivery", "bad-delivery"],
)
async def test_webhook_needs_json_and_a_delivery_id(
    served: tuple[str, Publisher, Metrics], change: dict[str, str], status: int
) -> None:
    url, pub, _ = served
    body = push()
    headers = {**github(body), **change}
    async with aiohttp.ClientSession() as s, s.post(url + "/hooks/git", data=body,
                                                     headers=headers) as r:  # fmt: skip
        assert r.status == status
    assert pub.published == []


async def test_a_delivery_the_publisher_refuses_as_a_replay_is_a_409(
    served: tuple[str, Publisher, Metrics],
) -> None:
    url, pub, _ = served
    body = push()
    headers = github(body, delivery="replayed-1")
    async with aiohttp.ClientSession() as s:
        async with s.post(url + "/hooks/git", data=body, headers=headers) as r:
            assert r.status == 200
        async with s.post(url + "/hooks/git", data=body, headers=headers) as r:
            assert r.status == 409 and "already handled" in (await r.json())["error"]
    assert pub.published == [SHA]


async def _slow_client(port: int, every: float) -> float:
    """Send a header line every ``every`` s, never ending the head; seconds until dropped."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)

    async def trickle() -> None:
        writer.write(b"POST /hooks/git HTTP/1.1\r\nHost: x\r\n")
        while True:
            await asyncio.sleep(every)
            writer.write(b"X-Slow: 1\r\n")

    sender = asyncio.create_task(trickle())
    try:
        async with asyncio.timeout(30):
            while await reader.read(1024):
                pass
    except (ConnectionError, OSError):
        pass
    finally:
        sender.cancel()
        writer.close()
    return loop.time() - t0


async def test_slow_clients_are_dropped_and_connections_limited() -> None:
    from reconciler.agent.http import serve

    app = make_app(Metrics(), lambda: {"ok": True}, webhook_secret=SECRET, publish=Publisher(),
                   body_timeout=1.0)  # fmt: skip
    from tests.fixtures.etcd import free_ports

    (port,) = free_ports(1)
    runner = await serve(app, "127.0.0.1", port, header_timeout=1.5, max_connections=50)
    try:
        # 60 slowloris clients against a limit of 50 and a 1.5 s header timeout: the ten
        # over the limit are closed at once, the others within the timeout (plus a tick)
        times = await asyncio.gather(*(_slow_client(port, 0.2) for _ in range(60)))
        assert max(times) < 4.0, sorted(times)[-5:]
        assert sum(t < 0.5 for t in times) >= 10
        # a head that arrived with a body that never does: 408 after the body timeout
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        async with asyncio.timeout(5):
            first = await reader.readline()
        writer.close()
        assert b" 408 " in first
        # and the server still answers a well-behaved client
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as r:
            assert r.status == 200
    finally:
        await runner.cleanup()


async def test_an_outage_behind_the_webhook_is_a_503_to_retry() -> None:
    from reconciler.errors import EtcdUnavailable

    async def down(rev: str, delivery: str) -> list[str]:
        raise EtcdUnavailable("no etcd endpoint answered")

    app = make_app(Metrics(), lambda: {"ok": True}, webhook_secret=SECRET, publish=down)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        body = push()
        url = f"http://127.0.0.1:{server.port}/hooks/git"
        async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=github(body)) as r:
            assert r.status == 503 and "no etcd endpoint" in (await r.json())["error"]
    finally:
        await server.close()
