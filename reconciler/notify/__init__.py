"""Operator notifications (control layer): events, coalescing, the hub and its notifiers."""

from reconciler.notify.coalesce import Coalescer, Delivery
from reconciler.notify.events import Event, EventKind, Severity
from reconciler.notify.hub import Notifications
from reconciler.notify.notifiers import SlackNotifier, WebhookNotifier, from_config

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
