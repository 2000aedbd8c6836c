"""Prometheus view of the notification hub and the service registrar.

Both are created by the agent at run time, so the collector takes getters and reads their
counters on each scrape (no double bookkeeping, nothing to update from hot paths):

- ``swarmkeeper_notify_events_total{result=emitted|coalesced|dropped}``
- ``swarmkeeper_notify_deliveries_total{result=sent|failed|abandoned}``
- ``swarmkeeper_notify_requests_total``: HTTP requests made, retries included
- ``swarmkeeper_notify_notifiers``: notifiers configured and usable
- ``swarmkeeper_service_registered{service}``: 1 while the service's key is in etcd
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from reconciler.agent.services import ServiceRegistrar
    from reconciler.notify.hub import Notifications


class OpsCollector(Collector):
    def __init__(
        self,
        hub: Callable[[], Notifications | None],
        registrar: Callable[[], ServiceRegistrar | None],
    ) -> None:
        self._hub = hub
        self._registrar = registrar

    def collect(self) -> Iterator[Metric]:
        hub = self._hub()
        if hub is not None:
            s = hub.stats
            events = CounterMetricFamily(
                "swarmkeeper_notify_events",
                "Notification events by what became of them",
                labels=["result"],
            )
            for result, n in (("emitted", s.emitted), ("coalesced", s.coalesced),
                              ("dropped", s.dropped)):  # fmt: skip
                events.add_metric([result], n)
            yield events
            deliveries = CounterMetricFamily(
                "swarmkeeper_notify_deliveries",
                "Messages to notifiers by outcome",
                labels=["result"],
            )
            for result, n in (("sent", s.sent), ("failed", s.failed),
                              ("abandoned", s.abandoned)):  # fmt: skip
                deliveries.add_metric([result], n)
            yield deliveries
            yield CounterMetricFamily(
                "swarmkeeper_notify_requests",
                "HTTP requests to notifiers, retries included",
                value=s.attempts,
            )
            yield GaugeMetricFamily(
                "swarmkeeper_notify_notifiers",
                "Notifiers configured and usable",
                value=len(hub.sinks),
            )
        registrar = self._registrar()
        if registrar is not None:
            reg = GaugeMetricFamily(
                "swarmkeeper_service_registered",
                "1 while the service passes its check and its key is in etcd",
                labels=["service"],
            )
            for service, registered in sorted(registrar.status().items()):
                reg.add_metric([service], 1.0 if registered else 0.0)
            yield reg


def register(
    registry: CollectorRegistry,
    hub: Callable[[], Notifications | None],
    registrar: Callable[[], ServiceRegistrar | None],
) -> OpsCollector:
    """Add the collector to the agent's registry; returns it (to unregister in tests)."""
    collector = OpsCollector(hub, registrar)
    registry.register(collector)
    return collector
