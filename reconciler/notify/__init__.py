"""Operator notifications (control layer): events, coalescing, the hub and its notifiers.

The public names load on first use, so that importing the pure ``notify.coalesce`` by
itself does not start the hub's and the notifiers' imports (asyncio, aiohttp, logging).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from reconciler.notify.coalesce import Coalescer, Delivery
    from reconciler.notify.events import Event, EventKind, Severity
    from reconciler.notify.hub import Notifications
    from reconciler.notify.notifiers import SlackNotifier, WebhookNotifier, from_config

_HOME = {
    "Coalescer": "reconciler.notify.coalesce",
    "Delivery": "reconciler.notify.coalesce",
    "Event": "reconciler.notify.events",
    "EventKind": "reconciler.notify.events",
    "Severity": "reconciler.notify.events",
    "Notifications": "reconciler.notify.hub",
    "SlackNotifier": "reconciler.notify.notifiers",
    "WebhookNotifier": "reconciler.notify.notifiers",
    "from_config": "reconciler.notify.notifiers",
}

__all__ = [
    "Coalescer",
    "Delivery",
    "Event",
    "EventKind",
    "Notifications",
    "Severity",
    "SlackNotifier",
    "WebhookNotifier",
    "from_config",
]


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
