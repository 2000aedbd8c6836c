"""Prometheus metrics of one agent, in a registry of its own (no global state)."""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.passes = Counter(
            "swarmkeeper_passes", "Reconcile passes by outcome", ["outcome"], registry=r
        )
        self.pass_seconds = Histogram(
            "swarmkeeper_pass_duration_seconds",
            "Duration of reconcile passes",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r,
        )
        self.applied = Gauge(
            "swarmkeeper_applied_revision_info",
            "The revision this node last converged on (value 1)",
            ["revision"],
            registry=r,
        )
        self.applied_at = Gauge(
            "swarmkeeper_applied_timestamp_seconds", "When the node last converged", registry=r
        )
        self.drift_repairs = Counter(
            "swarmkeeper_drift_repairs", "Actions that put hand-made changes back", registry=r
        )
        self.rollbacks = Counter("swarmkeeper_rollbacks", "Applies rolled back", registry=r)
        self.etcd_errors = Counter("swarmkeeper_etcd_errors", "etcd calls that failed", registry=r)
        self.git_errors = Counter(
            "swarmkeeper_git_errors", "git fetches/reads that failed", registry=r
        )
        self.git_fetches = Counter("swarmkeeper_git_fetches", "git fetches made", registry=r)
        self.renders = Counter("swarmkeeper_renders", "Revisions rendered, by where their "
                               "tree came from (artifact, git)", ["source"], registry=r)  # fmt: skip
        self.etcd_requests = Counter("swarmkeeper_etcd_requests", "etcd RPCs sent", registry=r)
        self._last_revision: str | None = None

    def set_applied(self, revision: str, when: float) -> None:
        if self._last_revision is not None and self._last_revision != revision:
            self.applied.remove(self._last_revision)
        self.applied.labels(revision=revision).set(1)
        self.applied_at.set(when)
        self._last_revision = revision
