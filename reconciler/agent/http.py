"""The agent's HTTP face: /healthz, /metrics and the optional git push webhook.

The webhook accepts GitHub/Gitea (HMAC-SHA256 of the body in ``X-Hub-Signature-256`` or
``X-Gitea-Signature``) and GitLab (``X-Gitlab-Token``) push events; a secret is required,
and an unsigned or wrongly signed request is refused before its body is parsed. It must be
``application/json`` and carry a delivery id (``X-GitHub-Delivery``, ``X-Gitea-Delivery``,
``X-Gitlab-Event-UUID``). A push to the watched branch hands ``after`` and the delivery id
to ``publish``, which checks that ``after`` is the branch head in the remote, validates, and
goes through the one publish path (prefix, forward-only, the delivery not seen before).

The server drops slow clients: request headers must arrive within ``header_timeout``
(aiohttp's keep-alive timer also runs from the connection's start), a body within
``body_timeout``, and connections above ``max_connections`` are closed at once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from reconciler.agent.metrics import Metrics
from reconciler.errors import TransientError
from reconciler.revisions.publish import PublishRefused

# (after, delivery id) -> problems (empty: published); raises PublishRefused
Publish = Callable[[str, str], Awaitable[list[str]]]
MAX_BODY = 5 * 1024 * 1024
HEADER_TIMEOUT = 10.0
BODY_TIMEOUT = 10.0
MAX_CONNECTIONS = 64
DELIVERY_HEADERS = ("X-GitHub-Delivery", "X-Gitea-Delivery", "X-Gogs-Delivery",
                    "X-Gitlab-Event-UUID")  # fmt: skip


def signature_ok(secret: bytes, body: bytes, headers: Any) -> bool:
    """True when the request carries a valid signature or token for ``secret``."""
    digest = hmac.new(secret, body, hashlib.sha256).hexdigest()
    gh = headers.get("X-Hub-Signature-256", "")
    if gh.startswith("sha256="):
        return hmac.compare_digest(gh[len("sha256=") :], digest)
    gitea = headers.get("X-Gitea-Signature", "") or headers.get("X-Gogs-Signature", "")
    if gitea:
        return hmac.compare_digest(gitea, digest)
    token = headers.get("X-Gitlab-Token", "")
    if token:
        return hmac.compare_digest(token.encode(), secret)
    return False


def make_app(
    metrics: Metrics,
    health: Callable[[], dict[str, Any]],
    *,
    webhook_secret: bytes | None = None,
    branch: str = "main",
    publish: Publish | None = None,
    body_timeout: float = BODY_TIMEOUT,
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)

    async def healthz(_: web.Request) -> web.Response:
        h = health()
        return web.json_response(h, status=200 if h.get("ok") else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))

    if webhook_secret and publish is not None:

        async def hook(request: web.Request) -> web.Response:
            try:
                async with asyncio.timeout(body_timeout):
                    body = await request.read()
            except TimeoutError:
                return web.json_response({"error": "body too slow"}, status=408)
            if not signature_ok(webhook_secret, body, request.headers):
                return web.json_response({"error": "bad or missing signature"}, status=401)
            if request.content_type != "application/json":
                return web.json_response(
                    {"error": f"content type {request.content_type!r}: send application/json"},
                    status=415,
                )
            delivery = next(
                (request.headers[h] for h in DELIVERY_HEADERS if h in request.headers), ""
            )
            if not delivery or "/" in delivery or len(delivery) > 200:
                return web.json_response({"error": "missing or invalid delivery id"}, status=400)
            try:
                event = json.loads(body)
                ref, after = str(event["ref"]), str(event["after"])
            except (ValueError, KeyError, TypeError):
                return web.json_response({"error": "not a push event"}, status=400)
            if ref != f"refs/heads/{branch}":
                return web.json_response({"ignored": f"push to {ref}, watching {branch}"})
            if set(after) == {"0"}:
                return web.json_response({"ignored": "branch deleted"})
            try:
                problems = await publish(after, delivery)
            except PublishRefused as e:
                return web.json_response(
                    {"refused": after, "error": str(e)}, status=409 if e.replay else 422
                )
            except TransientError as e:  # etcd or git away: the sender retries later
                return web.json_response({"error": str(e)}, status=503)
            if problems:
                return web.json_response({"rejected": after, "problems": problems}, status=422)
            return web.json_response({"published": after, "at": time.time()})

        app.router.add_post("/hooks/git", hook)
    return app


class _Refuse(asyncio.Protocol):
    """What a connection above the limit gets: closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _Counted(asyncio.Protocol):
    """aiohttp's handler for one connection, counted from accept to close.

    aiohttp counts a connection only once its ``connection_made`` ran, which asyncio
    schedules after the accept: a burst of connects would all pass a check on that count.
    """

    def __init__(self, inner: asyncio.Protocol, live: set[_Counted]) -> None:
        self._inner = inner
        self._live = live
        live.add(self)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._live.discard(self)
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class _GuardedSite(web.TCPSite):
    """A TCPSite that closes connections above ``limit`` before aiohttp reads a byte."""

    def __init__(self, runner: web.AppRunner, host: str, port: int, limit: int) -> None:
        super().__init__(runner, host, port)
        self._limit = limit
        self._live: set[_Counted] = set()

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None

        def factory() -> asyncio.Protocol:
            if len(self._live) >= self._limit:
                return _Refuse()
            return _Counted(server(), self._live)

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(factory, self._host, self._port,
                                                reuse_address=True)  # fmt: skip


async def serve(
    app: web.Application,
    host: str,
    port: int,
    *,
    header_timeout: float = HEADER_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> web.AppRunner:
    """Start ``app`` on ``host:port`` with the slow-client limits; ``cleanup()`` stops it."""
    # aiohttp arms its keep-alive timer when a connection opens and closes the connection
    # if no complete request head arrived by then: with a short one it is the header timeout
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=header_timeout)
    await runner.setup()
    await _GuardedSite(runner, host, port, max_connections).start()
    return runner
