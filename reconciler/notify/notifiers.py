"""The notifiers a cluster can declare (Slack incoming webhook, generic JSON webhook).

Each turns a :class:`~reconciler.notify.coalesce.Delivery` into the JSON body its endpoint expects.
Their URLs are secrets: they come from an environment variable (``url_env``) or a file on the
node (``url_file``), never from git, and are never logged. A notifier whose secret is missing
or unusable is left out with a warning; the agent keeps running without it.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from reconciler import log
from reconciler.models import Notifier
from reconciler.notify.coalesce import Delivery
from reconciler.notify.events import Severity

_EMOJI = {
    Severity.DEBUG: ":mag:",
    Severity.INFO: ":information_source:",
    Severity.WARNING: ":warning:",
    Severity.ERROR: ":rotating_light:",
}


def short_revision(revision: str) -> str:
    """A full commit sha shortened for people; anything else ("worktree") as is."""
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision.lower()):
        return revision[:7]
    return revision


def _slack_escape(text: str) -> str:
    # Slack's mrkdwn needs exactly these three escaped; everything else is literal.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _count_suffix(delivery: Delivery) -> str:
    if delivery.count <= 1:
        return ""
    span = delivery.span
    within = f" in {span:.0f}s" if span >= 1 else " in <1s"
    return f" (×{delivery.count}{within})"


def format_text(delivery: Delivery, *, markup: bool = True) -> str:
    """One short line: what happened, on which node, at which revision, to which unit.

    ``:warning: *drift repaired* on `node-2` at `1a2b3c4` · `vault.service`: restarted (×50 in 1s)``
    """
    ev = delivery.event
    esc = _slack_escape if markup else (lambda s: s)

    def code(s: str) -> str:
        return f"`{esc(s)}`" if markup else s

    title = ev.kind.replace("_", " ")
    parts = [f"{_EMOJI[ev.severity]} *{title}*" if markup else f"[{ev.severity}] {title}"]
    parts.append(f"on {code(ev.node)}")
    if ev.revision:
        parts.append(f"at {code(short_revision(ev.revision))}")
    if ev.unit:
        parts.append(f"· {code(ev.unit)}")
    text = " ".join(parts)
    if ev.message:
        text += f": {esc(ev.message)}"
    return text + _count_suffix(delivery)


def event_json(delivery: Delivery) -> dict[str, Any]:
    """The generic webhook body: the event's fields, times in ISO 8601 UTC, and the count."""
    ev = delivery.event

    def iso(t: float) -> str:
        return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")

    return {
        "kind": str(ev.kind),
        "severity": str(ev.severity),
        "node": ev.node,
        "revision": ev.revision,
        "unit": ev.unit,
        "message": ev.message,
        "details": dict(ev.details),
        "at": iso(ev.at),
        "count": delivery.count,
        "first_at": iso(delivery.first_at or ev.at),
        "text": format_text(delivery, markup=False),
    }


@dataclass(frozen=True, slots=True)
class SlackNotifier:
    """A Slack incoming webhook: ``{"text": ..., "channel": ...}``."""

    url: str
    name: str
    min_severity: Severity = Severity.INFO
    channel: str = ""

    def payload(self, delivery: Delivery) -> dict[str, Any]:
        body: dict[str, Any] = {"text": format_text(delivery)}
        if self.channel:
            body["channel"] = self.channel
        return body


@dataclass(frozen=True, slots=True)
class WebhookNotifier:
    """Any HTTP endpoint that takes the event as JSON."""

    url: str
    name: str
    min_severity: Severity = Severity.INFO

    def payload(self, delivery: Delivery) -> dict[str, Any]:
        return event_json(delivery)


def resolve_url(cfg: Notifier, env: Mapping[str, str]) -> tuple[str, str]:
    """(url, problem): the notifier's secret URL from the node, or why it is unusable."""
    where = []
    url = ""
    if cfg.url_env:
        where.append(f"${cfg.url_env}")
        url = env.get(cfg.url_env, "").strip()
    if not url and cfg.url_file:
        where.append(cfg.url_file)
        try:
            with open(cfg.url_file, encoding="utf-8") as f:
                url = f.read().strip()
        except OSError as e:
            return "", f"cannot read {cfg.url_file}: {e.strerror or e}"
    if not where:
        return "", "neither url_env nor url_file is set"
    if not url:
        return "", f"no URL in {' or '.join(where)}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # do not echo the value: a mangled secret is still a secret
        return "", f"the value in {' or '.join(where)} is not an http(s) URL"
    return url, ""


def from_config(
    configs: Iterable[Notifier], *, env: Mapping[str, str] | None = None
) -> list[SlackNotifier | WebhookNotifier]:
    """The usable notifiers of ``cluster.notify``; unusable ones are logged and skipped."""
    env = os.environ if env is None else env
    logger = log.get("swarmkeeper.notify")
    out: list[SlackNotifier | WebhookNotifier] = []
    for i, cfg in enumerate(configs):
        label = f"{cfg.type}#{i}({(cfg.url_env and '$' + cfg.url_env) or cfg.url_file})"
        try:
            severity = Severity.parse(cfg.min_severity or "info")
        except ValueError:
            logger.warning("notify.disabled", notifier=label, reason="unknown min_severity")
            continue
        if cfg.type not in ("slack", "webhook"):
            logger.warning("notify.disabled", notifier=label, reason=f"unknown type {cfg.type!r}")
            continue
        url, problem = resolve_url(cfg, env)
        if problem:
            logger.warning("notify.disabled", notifier=label, reason=problem)
            continue
        if cfg.type == "slack":
            out.append(SlackNotifier(url, label, severity, cfg.channel))
        else:
            out.append(WebhookNotifier(url, label, severity))
    return out
