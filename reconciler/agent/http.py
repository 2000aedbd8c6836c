"""The agent's HTTP face: /healthz, /metrics and the optional git push webhook.

The webhook accepts GitHub/Gitea (HMAC-SHA256 of the body in ``X-Hub-Signature-256`` or
``X-Gitea-Signature``) and GitLab (``X-Gitlab-Token``) push events; a secret is required,
and an unsigned or wrongly signed request is refused before its body is parsed. A push to
the watched branch hands its ``after`` commit to ``publish`` (which validates, then sets the
desired revision in etcd).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client.aiohttp import make_aiohttp_handler

from reconciler.agent.metrics import Metrics

Publish = Callable[[str], Awaitable[list[str]]]  # -> problems (empty: published)
MAX_BODY = 5 * 1024 * 1024


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
) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)

    async def healthz(_: web.Request) -> web.Response:
        h = health()
        return web.json_response(h, status=200 if h.get("ok") else 503)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", make_aiohttp_handler(metrics.registry))

    if webhook_secret and publish is not None:

        async def hook(request: web.Request) -> web.Response:
            body = await request.read()
            if not signature_ok(webhook_secret, body, request.headers):
                return web.json_response({"error": "bad or missing signature"}, status=401)
            try:
                event = json.loads(body)
                ref, after = str(event["ref"]), str(event["after"])
            except (ValueError, KeyError, TypeError):
                return web.json_response({"error": "not a push event"}, status=400)
            if ref != f"refs/heads/{branch}":
                return web.json_response({"ignored": f"push to {ref}, watching {branch}"})
            if set(after) == {"0"}:
                return web.json_response({"ignored": "branch deleted"})
            problems = await publish(after)
            if problems:
                return web.json_response({"rejected": after, "problems": problems}, status=422)
            return web.json_response({"published": after, "at": time.time()})

        app.router.add_post("/hooks/git", hook)
    return app
