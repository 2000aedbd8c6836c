"""Notifications: coalescing and formatting (pure, table/property tests) and the hub against a
real local aiohttp server standing in for Slack and a JSON webhook."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.models import Notifier
from reconciler.notify.coalesce import Coalescer, Delivery
from reconciler.notify.events import DEFAULT_SEVERITY, Event, EventKind, Severity
from reconciler.notify.hub import Notifications
from reconciler.notify.notifiers import (
    SlackNotifier,
    WebhookNotifier,
    format_text,
    from_config,
    resolve_url,
    short_revision,
)
from tests.fixtures.webhook import HookServer

SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"


def ev(
    kind: EventKind = EventKind.DRIFT_REPAIRED, unit: str = "vault.service", **kw: object
) -> Event:
    return Event.of(kind, str(kw.pop("node", "node-1")), revision=SHA, unit=unit, **kw)  # type: ignore[arg-type]


# -- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "less"),
    [
        ("debug", "info", True),
        ("info", "warning", True),
        ("warning", "error", True),
        ("error", "debug", False),
        ("info", "info", False),
        ("error", "warning", False),
    ],
)
def test_severity_order(a: str, b: str, less: bool) -> None:
    assert (Severity(a) < Severity(b)) is less
    assert (Severity(a) >= Severity(b)) is not less


def test_every_kind_has_a_default_severity() -> None:
    assert set(DEFAULT_SEVERITY) == set(EventKind)
    assert Event.of(EventKind.APPLY_ROLLED_BACK, "n").severity is Severity.ERROR
    assert Event.of(EventKind.REVISION_APPLIED, "n", severity=Severity.DEBUG).severity == "debug"


def test_fifty_identical_events_in_a_second_close_as_one_delivery() -> None:
    c = Coalescer(window=2.0, max_window=60.0)
    for i in range(50):
        c.add(ev(), now=100.0 + i * 0.02)
    assert c.pop_due(101.9) == []
    [d] = c.pop_due(102.0)
    assert d.count == 50
    assert len(c) == 0


def test_distinct_keys_are_not_merged() -> None:
    c = Coalescer(window=1.0, max_window=60.0)
    c.add(ev(unit="a.service"), 0.0)
    c.add(ev(unit="b.service"), 0.0)
    c.add(ev(kind=EventKind.SERVICE_UNHEALTHY, unit="a.service"), 0.0)
    c.add(ev(unit="a.service", node="node-2"), 0.0)
    assert sorted(d.count for d in c.pop_due(1.0)) == [1, 1, 1, 1]


def test_recurring_key_gets_longer_windows_then_resets_when_quiet() -> None:
    c = Coalescer(window=1.0, max_window=8.0)
    t = 0.0
    lengths = []
    for _ in range(6):  # the same drift repaired on every pass, a pass right after each flush
        c.add(ev(), t)
        deadline = c.next_deadline()
        assert deadline is not None
        lengths.append(deadline - t)
        t = deadline
        assert len(c.pop_due(t)) == 1
    assert lengths == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    t += 8.0  # quiet for max_window
    c.add(ev(), t)
    assert c.next_deadline() == t + 1.0


def test_merged_event_keeps_latest_message_and_highest_severity() -> None:
    c = Coalescer(window=1.0, max_window=8.0)
    c.add(ev(message="first", severity=Severity.ERROR), 0.0)
    c.add(ev(message="second", severity=Severity.INFO), 0.5)
    [d] = c.pop_due(1.0)
    assert (d.event.message, d.event.severity, d.count) == ("second", Severity.ERROR, 2)


def test_full_table_drops_the_oldest_window() -> None:
    c = Coalescer(window=1.0, max_window=8.0, capacity=3)
    dropped = sum(c.add(ev(unit=f"u{i}.service"), 0.0)[1] for i in range(5))
    assert dropped == 2
    assert sorted(d.event.unit for d in c.drain()) == ["u2.service", "u3.service", "u4.service"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.floats(0, 3, allow_nan=False)), min_size=1, max_size=80
    ),
    st.integers(1, 6),
)
def test_coalescer_conserves_events(steps: list[tuple[int, float]], capacity: int) -> None:
    """Every event ends up counted in exactly one delivery unless its window was dropped."""
    c = Coalescer(window=0.5, max_window=4.0, capacity=capacity)
    now, delivered, dropped_windows, counts_dropped = 0.0, 0, 0, 0
    for unit, dt in steps:
        now += dt
        delivered += sum(d.count for d in c.pop_due(now))
        before = {p.event.key: p.count for p in c._pending.values()}
        merged, dropped = c.add(ev(unit=f"u{unit}"), now)
        if dropped:
            after = {p.event.key for p in c._pending.values()}
            counts_dropped += sum(n for k, n in before.items() if k not in after)
            dropped_windows += dropped
        assert len(c) <= capacity
        assert merged in (0, 1)
    delivered += sum(d.count for d in c.drain())
    assert delivered + counts_dropped == len(steps)


@pytest.mark.parametrize(
    ("delivery", "markup", "expected"),
    [
        (
            Delivery(ev(message="restarted <content changed>")),
            True,
            ":warning: *drift repaired* on `node-1` at `1a2b3c4` · `vault.service`: "
            "restarted &lt;content changed&gt;",
        ),
        (
            Delivery(ev(at=1000.0), count=50, first_at=999.0),
            True,
            ":warning: *drift repaired* on `node-1` at `1a2b3c4` · `vault.service` (×50 in 1s)",
        ),
        (
            Delivery(Event.of(EventKind.AGENT_STARTED, "m1", message="swarmkeeper 0.1.0")),
            False,
            "[info] agent started on m1: swarmkeeper 0.1.0",
        ),
        (
            Delivery(
                Event.of(EventKind.REVISION_REJECTED, "m1", revision="worktree", at=5.0), 3, 5.0
            ),
            False,
            "[error] revision rejected on m1 at worktree (×3 in <1s)",
        ),
    ],
)
def test_format_text(delivery: Delivery, markup: bool, expected: str) -> None:
    assert format_text(delivery, markup=markup) == expected


def test_short_revision() -> None:
    assert short_revision(SHA) == "1a2b3c4"
    assert short_revision("worktree") == "worktree"
    assert short_revision("v1.2") == "v1.2"


def test_urls_come_from_env_or_file_and_missing_ones_disable_quietly(tmp_path: Path) -> None:
    f = tmp_path / "hook-url"
    f.write_text("https://hooks.example.invalid/T/B/x\n")
    bad = tmp_path / "bad-url"
    bad.write_text("not a url")
    env = {"SLACK_URL": "https://hooks.slack.example.invalid/services/T/B/C"}
    configs = [
        Notifier("slack", url_env="SLACK_URL", channel="#ops", min_severity="info"),
        Notifier("webhook", url_file=str(f), min_severity="warning"),
        Notifier("slack", url_env="NOT_SET_ANYWHERE"),
        Notifier("webhook", url_file=str(tmp_path / "absent")),
        Notifier("webhook", url_file=str(bad)),
        Notifier("pagerduty", url_env="SLACK_URL"),
        Notifier("slack", url_env="SLACK_URL", min_severity="loud"),
    ]
    sinks = from_config(configs, env=env)
    assert sinks == [
        SlackNotifier(env["SLACK_URL"], "slack#0($SLACK_URL)", Severity.INFO, "#ops"),
        WebhookNotifier("https://hooks.example.invalid/T/B/x", f"webhook#1({f})", Severity.WARNING),
    ]
    assert resolve_url(configs[2], env) == ("", "no URL in $NOT_SET_ANYWHERE")
    url, problem = resolve_url(configs[4], env)
    assert url == "" and "not a url" not in problem  # never echo a (possibly secret) value


# -- the hub against a real HTTP endpoint -------------------------------------------------------


def fast_hub(*sinks: SlackNotifier | WebhookNotifier, **kw: float) -> Notifications:
    opts: dict[str, float] = {
        "coalesce_window": 0.05,
        "request_timeout": 0.3,
        "max_attempts": 3,
        "backoff_base": 0.02,
        "backoff_max": 0.1,
    }
    opts.update(kw)
    return Notifications(sinks, rng=random.Random(7), **opts)  # type: ignore[arg-type]


async def test_every_event_kind_reaches_slack_and_webhook_filtered_by_severity() -> None:
    async with HookServer() as srv:
        slack = SlackNotifier(srv.url("/slack"), "slack", Severity.INFO, "#ops")
        hook = WebhookNotifier(srv.url("/hook"), "hook", Severity.WARNING)
        hub = fast_hub(slack, hook)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hub.run())
            for kind in EventKind:
                hub.emit(
                    Event.of(
                        kind,
                        "node-7",
                        revision=SHA,
                        unit="vault.service",
                        message=f"{kind} happened",
                        details={"pass": 3},
                    )
                )
            await srv.wait_for(len(EventKind), "/slack")
            await hub.aclose()

    slack_texts = {b["text"] for b in srv.bodies("/slack")}
    assert len(srv.bodies("/slack")) == len(EventKind)
    assert all(
        b["channel"] == "#ops" and set(b) == {"text", "channel"} for b in srv.bodies("/slack")
    )
    for kind in EventKind:
        title = kind.replace("_", " ")
        [text] = [t for t in slack_texts if f"*{title}*" in t]
        assert "`node-7`" in text and "`1a2b3c4`" in text and "`vault.service`" in text
        assert text.endswith(f"{kind} happened")

    warn_kinds = {k for k in EventKind if DEFAULT_SEVERITY[k] >= Severity.WARNING}
    hook_bodies = srv.bodies("/hook")
    assert {b["kind"] for b in hook_bodies} == {str(k) for k in warn_kinds}
    assert len(hook_bodies) == len(warn_kinds)
    one = next(b for b in hook_bodies if b["kind"] == "apply_rolled_back")
    assert one["severity"] == "error" and one["node"] == "node-7" and one["revision"] == SHA
    assert one["unit"] == "vault.service" and one["details"] == {"pass": 3}
    assert one["count"] == 1 and one["at"].endswith("+00:00")
    assert hub.stats.sent == len(EventKind) + len(warn_kinds) and hub.stats.failed == 0


async def test_fifty_identical_drift_events_in_a_second_produce_one_message() -> None:
    async with HookServer() as srv:
        hub = fast_hub(SlackNotifier(srv.url("/slack"), "slack"), coalesce_window=1.5)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hub.run())
            for _ in range(50):
                hub.emit(ev(message="restarted vault.service (content changed)"))
                await asyncio.sleep(0.015)
            await srv.wait_for(1, "/slack")
            await asyncio.sleep(0.3)  # room for a (wrong) second message to arrive
            await hub.aclose()
    [body] = srv.bodies("/slack")
    assert "×50" in body["text"] and "drift repaired" in body["text"]
    assert hub.stats.coalesced == 49


async def simulated_passes(hub: Notifications, passes: int = 40) -> tuple[float, float]:
    """A stand-in for the agent's pass loop: awaits, a little CPU, and several emits per pass.
    Returns (total seconds, slowest single emit in seconds)."""
    worst = 0.0
    t0 = time.perf_counter()
    for p in range(passes):
        await asyncio.sleep(0.005)
        sum(range(20_000))
        for kind in (
            EventKind.REVISION_APPLIED,
            EventKind.DRIFT_REPAIRED,
            EventKind.ROLLOUT_HALTED,
        ):
            e0 = time.perf_counter()
            hub.emit(Event.of(kind, "node-1", revision=f"{p:040x}", unit="x.service"))
            worst = max(worst, time.perf_counter() - e0)
    return time.perf_counter() - t0, worst


@pytest.mark.parametrize("mode", ["hang", "error"])
async def test_dead_or_slow_webhook_does_not_slow_passes_and_retries_are_bounded(mode: str) -> None:
    async with HookServer() as good, HookServer(mode=mode) as bad:
        timings = {}
        for name, srv in (("good", good), ("bad", bad)):
            hub = fast_hub(WebhookNotifier(srv.url(), name), request_timeout=1.0, max_attempts=3)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(hub.run())
                timings[name] = await simulated_passes(hub)
                await hub.aclose(flush_within=5.0 if name == "good" else 0.2)
        good_total, _ = timings["good"]
        bad_total, bad_worst = timings["bad"]
        # A notifier that blocked the emitter would add >= 1 s (one request timeout) to a
        # single emit and >= 120 s to the loop with the hanging hook (seconds with the failing
        # one, from its retries and backoff). The margins only absorb a busy shared machine.
        assert bad_total < good_total * 2 + 0.5, timings
        assert bad_worst < 0.1, timings
        assert len(good.bodies()) == 120

        # bounded retries: one event, a hub that gives up after exactly 3 attempts
        bad.received.clear()
        hub = fast_hub(WebhookNotifier(bad.url(), "bad"), request_timeout=0.2, max_attempts=3)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hub.run())
            hub.emit(ev())
            await bad.wait_for(3)
            await asyncio.sleep(0.5)  # a fourth attempt, if any, would arrive now
            await hub.aclose(flush_within=0.1)
        assert len(bad.bodies()) == 3
        assert (hub.stats.attempts, hub.stats.failed, hub.stats.sent) == (3, 1, 0)


async def test_transient_failures_are_retried_until_delivered_honouring_retry_after() -> None:
    async with HookServer(script=["error", "limited", "ok"], retry_after="0.4") as srv:
        hub = fast_hub(WebhookNotifier(srv.url(), "hook"), max_attempts=5, backoff_max=2.0)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hub.run())
            hub.emit(ev())
            await srv.wait_for(3)
            await hub.aclose()
    assert len(srv.bodies()) == 3
    assert srv.bodies()[0] == srv.bodies()[2]  # the same delivery each time
    assert (hub.stats.attempts, hub.stats.sent, hub.stats.failed) == (3, 1, 0)
    # backoff alone would wait <= 0.02 s then <= 0.04 s; after the 429 it waits Retry-After
    assert srv.received[2].at - srv.received[1].at >= 0.4
    assert srv.received[1].at - srv.received[0].at < 0.3


async def test_rejected_request_is_not_retried() -> None:
    async with HookServer(mode="reject") as srv:
        hub = fast_hub(WebhookNotifier(srv.url(), "hook"))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hub.run())
            hub.emit(ev())
            await srv.wait_for(1)
            await asyncio.sleep(0.2)
            await hub.aclose()
    assert len(srv.bodies()) == 1 and hub.stats.failed == 1


async def test_aclose_keeps_its_deadline_with_a_hanging_webhook_and_counts_leftovers() -> None:
    async with HookServer(mode="hang") as srv:
        hub = fast_hub(WebhookNotifier(srv.url(), "hook"), request_timeout=10.0, queue_size=4)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hub.run())
            for i in range(20):
                hub.emit(ev(unit=f"u{i}.service"))
            await srv.wait_for(1)
            t0 = time.perf_counter()
            await hub.aclose(flush_within=0.3)
            took = time.perf_counter() - t0
    assert took < 1.0
    # 20 windows into a table of 4: 16 dropped there; of the 4 delivered, 1 in flight + 3 queued
    assert hub.stats.dropped == 16
    assert hub.stats.abandoned == 4
    hub.emit(ev())  # after close: silently dropped, no exception
    assert hub.stats.dropped == 17


async def test_aclose_without_run_still_delivers_and_closes_session() -> None:
    async with HookServer() as srv:
        hub = fast_hub(SlackNotifier(srv.url("/slack"), "slack"), coalesce_window=60.0)
        hub.emit(Event.of(EventKind.AGENT_STOPPED, "node-1", message="SIGTERM"))
        await hub.aclose(flush_within=2.0)
        assert hub._poster._session is None  # closed and dropped
    [body] = srv.bodies("/slack")
    assert "agent stopped" in body["text"] and "SIGTERM" in body["text"]


class _Stop(Exception):
    pass


async def test_agent_shutdown_order_cancelled_run_then_aclose_still_delivers() -> None:
    """The agent's TaskGroup is torn down (cancelling run()) before it emits agent_stopped
    and calls aclose(): pending and in-flight deliveries and the last event still go out."""
    async with HookServer(script=["hang"]) as srv:
        hub = fast_hub(WebhookNotifier(srv.url(), "hook"), request_timeout=5.0)
        with pytest.raises(ExceptionGroup):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(hub.run(), name="notify")
                hub.emit(Event.of(EventKind.REVISION_APPLIED, "node-1", revision=SHA))
                await srv.wait_for(1)  # in flight, hanging, when the group is torn down
                raise _Stop
        hub.emit(Event.of(EventKind.AGENT_STOPPED, "node-1", message="SIGTERM"))
        await hub.aclose(flush_within=3.0)
    kinds = [b["kind"] for b in srv.bodies()]
    assert kinds[0] == "revision_applied"  # the request that hung
    assert sorted(kinds[1:]) == ["agent_stopped", "revision_applied"]  # both sent at close
    assert hub.stats.sent == 2 and hub.stats.abandoned == 0
    with pytest.raises(RuntimeError):
        await hub.run()  # finished for good


async def test_events_before_the_first_configure_wait_for_it() -> None:
    async with HookServer() as srv:
        hub = Notifications(coalesce_window=0.05)  # as the agent creates it: notifiers unknown
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hub.run())
            hub.emit(Event.of(EventKind.AGENT_STARTED, "node-1", message="v0.1.0"))
            await asyncio.sleep(0.3)  # its window closed long ago
            assert srv.bodies() == []
            hub.configure([WebhookNotifier(srv.url(), "hook")])  # first revision rendered
            [body] = await srv.wait_for(1)
            await hub.aclose()
    assert body["kind"] == "agent_started"


async def test_cluster_notify_config_to_delivered_messages(tmp_path: Path) -> None:
    """From cluster.yaml's notify: entries (secrets from a node file and an env var)."""
    async with HookServer() as srv:
        url_file = tmp_path / "ops-hook-url"
        url_file.write_text(srv.url("/ops") + "\n")
        configs = (
            Notifier("slack", url_env="SK_TEST_SLACK", channel="#ops", min_severity="info"),
            Notifier("webhook", url_file=str(url_file), min_severity="warning"),
            Notifier("slack", url_env="SK_TEST_UNSET"),  # disabled with a warning, no crash
        )
        hub = Notifications(coalesce_window=0.05)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hub.run())
            hub.configure(from_config(configs, env={"SK_TEST_SLACK": srv.url("/slack")}))
            hub.emit(Event.of(EventKind.REVISION_APPLIED, "m1", revision=SHA))
            hub.emit(Event.of(EventKind.SWARM_LEFT, "m1", message="drained"))
            await srv.wait_for(2, "/slack")
            await srv.wait_for(1, "/ops")
            await hub.aclose()
    assert len(hub.sinks) == 2
    assert sorted(b["text"].split("*")[1] for b in srv.bodies("/slack")) == [
        "revision applied",
        "swarm left",
    ]
    assert [b["kind"] for b in srv.bodies("/ops")] == ["swarm_left"]


async def test_configure_swaps_notifiers_while_running() -> None:
    async with HookServer() as srv:
        a = WebhookNotifier(srv.url("/a"), "a")
        b = WebhookNotifier(srv.url("/b"), "b", Severity.ERROR)
        hub = fast_hub(a)
        async with asyncio.TaskGroup() as tg:
            tg.create_task(hub.run())
            hub.emit(ev(unit="one.service"))
            await srv.wait_for(1, "/a")
            hub.configure([b])
            hub.emit(ev(unit="two.service"))  # warning: below b's threshold
            hub.emit(Event.of(EventKind.ROLLOUT_HALTED, "node-1", message="3 nodes down"))
            await srv.wait_for(1, "/b")
            await hub.aclose()
    assert [x["unit"] for x in srv.bodies("/a")] == ["one.service"]
    assert [x["kind"] for x in srv.bodies("/b")] == ["rollout_halted"]
