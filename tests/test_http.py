"""The agent's HTTP face on a real 127.0.0.1 server: health, metrics and the push webhook."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from reconciler.agent.http import make_app
from reconciler.agent.metrics import Metrics

SECRET = b"s3cret"
SHA = "a" * 40


class Publisher:
    def __init__(self, problems: list[str] | None = None) -> None:
        self.published: list[str] = []
        self.problems = problems or []

    async def __call__(self, rev: str) -> list[str]:
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


def github(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()}


def gitea(body: bytes, secret: bytes = SECRET) -> dict[str, str]:
    return {"X-Gitea-Signature": hmac.new(secret, body, hashlib.sha256).hexdigest()}


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
        ({"X-Gitlab-Token": SECRET.decode()}, 200, [SHA]),
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
