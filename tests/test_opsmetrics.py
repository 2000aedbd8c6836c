"""The Prometheus view of a real hub (real HTTP endpoint) and a real registrar (real etcd)."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, generate_latest

from reconciler import keys
from reconciler.agent.opsmetrics import register
from reconciler.agent.services import ServiceRegistrar
from reconciler.etcd.client import Etcd
from reconciler.models import CheckKind, HealthCheck, Registration
from reconciler.notify.events import Event, EventKind
from reconciler.notify.hub import Notifications
from reconciler.notify.notifiers import WebhookNotifier
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.webhook import HookServer


async def test_metrics_reflect_hub_and_registrar(etcd_server: EtcdServer) -> None:
    registry = CollectorRegistry()
    hub: Notifications | None = None
    registrar: ServiceRegistrar | None = None
    register(registry, lambda: hub, lambda: registrar)
    assert generate_latest(registry) == b""  # nothing created yet: nothing exported

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, labels)

    listener = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    async with HookServer() as srv, await Etcd.connect([etcd_server.endpoint]) as etcd:
        hub = Notifications([WebhookNotifier(srv.url(), "hook")], coalesce_window=0.05)
        task = asyncio.create_task(hub.run())
        for _ in range(3):
            hub.emit(Event.of(EventKind.DRIFT_REPAIRED, "n1", unit="a.service"))
        await srv.wait_for(1)
        await hub.aclose()
        await task
        assert sample("swarmkeeper_notify_events_total", result="emitted") == 3
        assert sample("swarmkeeper_notify_events_total", result="coalesced") == 2
        assert sample("swarmkeeper_notify_deliveries_total", result="sent") == 1
        assert sample("swarmkeeper_notify_requests_total") == 1
        assert sample("swarmkeeper_notify_notifiers") == 1

        registrar = ServiceRegistrar(etcd, prefix="/m", node="n1", address="10.0.0.1")
        up = Registration("db", 5432, HealthCheck(CheckKind.TCP, f"127.0.0.1:{port}"), 0.2)
        down = Registration("gone", 1, HealthCheck(CheckKind.TCP, "127.0.0.1:1"), 0.2)
        await registrar.update([("db.service", up), ("gone.service", down)])
        rtask = asyncio.create_task(registrar.run())
        for _ in range(250):  # up to 5 s
            if sample("swarmkeeper_service_registered", service="db") == 1:
                break
            await asyncio.sleep(0.02)
        assert sample("swarmkeeper_service_registered", service="db") == 1
        assert await etcd.get(keys.services("/m", "db", "n1")) is not None  # it is true
        assert sample("swarmkeeper_service_registered", service="gone") == 0
        await registrar.aclose()
        await rtask
    listener.close()
    assert b'swarmkeeper_service_registered{service="db"} 0.0' in generate_latest(registry)
