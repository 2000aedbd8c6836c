"""Every error swarmkeeper raises, grouped by how the agent reacts to it.

The tree (catch the branch that matches how you will react); the reaction is what the
agent's worker does when a pass ends with it (``reconciler.agent.policy`` is that table)::

    SwarmkeeperError
    ├── InvalidDesiredState   the commit itself is wrong: never retried; the node stays on its
    │                         last good revision and reports ``rejected`` with the problems
    ├── EtcdError             etcd refused a request (permission, invalid argument): the node
    │                         reports ``degraded`` and retries at the capped backoff, since
    │                         only an operator's fix (a role, a quota) ends it
    ├── TransientError        the world is briefly unavailable: ``degraded``, retried with backoff
    │   ├── EtcdUnavailable   no etcd endpoint answered
    │   ├── LeaseNotFound     a write named an expired lease: grant a new one, retry
    │   ├── SourceError       git fetch/read failed (remote unreachable, missing commit)
    │   │   └── UnknownRevision   the revision is not in the repository: for an agent the
    │   │                         mirror may lag (retried); an operator mistyped it (exit 1)
    │   └── NodeFault         the node itself cannot carry out the plan (disk full, I/O
    │       │                 error, permission, busy apply lock): ``degraded`` on that node,
    │       │                 backoff; the rollout is NOT halted
    │       └── NodeBusy      another process is applying on this node (its apply.lock)
    ├── ActuatorError         touching the node failed: the pass rolls back, reports
    │   │                     ``degraded`` and retries with backoff; only a health-gate
    │   │                     failure of a NEW revision halts the rollout (``rollout/failed``)
    │   ├── SystemdError      a D-Bus call or job failed
    │   ├── UnitFailed        the health gate saw a unit fail to become active
    │   └── SwarmError        a Docker Engine swarm call failed or the node is in the
    │                         wrong swarm (never fixed by a silent leave)
    └── UsageError            the operator's command line or config is wrong (exit 1)

Any other exception escaping a pass is a bug: the agent catches it at the pass boundary,
reports ``degraded`` naming it (type and message), keeps its heartbeat and retries with
backoff; the process never dies of it.

``Problem`` is one ``path:line: message`` finding; ``InvalidDesiredState`` carries all of them
so an operator sees every problem of a commit at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One validation finding, printed as ``path:line: message``."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line > 0 else self.path
        return f"{where}: {self.message}"


class SwarmkeeperError(Exception):
    """Root of every error the package raises on purpose."""


class InvalidDesiredState(SwarmkeeperError):
    """The desired state (a commit, a params file) is invalid. Not retried."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems: tuple[Problem, ...] = tuple(sorted(set(problems)))
        super().__init__("\n".join(str(p) for p in self.problems))


class TransientError(SwarmkeeperError):
    """Something outside us is briefly unavailable. Retried with backoff."""


class EtcdUnavailable(TransientError):
    """No etcd endpoint answered in time."""


class NodeFault(TransientError):
    """The node itself cannot carry out the plan: disk full (ENOSPC), an I/O error (EIO),
    permission denied (EACCES), a busy apply lock. The node reports ``degraded`` and retries
    with backoff; the rollout is not halted, since the revision is not what failed."""


class NodeBusy(NodeFault):
    """Another process is applying on this node right now (``<state_dir>/apply.lock``)."""


class EtcdError(SwarmkeeperError):
    """etcd refused a request (permission denied, invalid argument): the same request will
    fail again until an operator fixes it, so the agent reports it and retries only at the
    capped backoff."""


class LeaseNotFound(TransientError):
    """A write named a lease etcd no longer has (it expired): grant a new one and retry.
    The ``Lease`` is marked lost, so ``wait_lost()`` owners notice too."""


class SourceError(TransientError):
    """The git source could not be fetched or read."""


class UnknownRevision(SourceError):
    """The repository has no such revision (an agent's mirror may lag; an operator mistyped)."""


class ActuatorError(SwarmkeeperError):
    """Changing the node failed; the pass rolls back to the last good state."""


class SystemdError(ActuatorError):
    """A systemd D-Bus call or job failed."""


class UnitFailed(ActuatorError):
    """A unit did not become healthy after it was (re)started."""

    def __init__(self, unit: str, state: str, detail: str = "") -> None:
        self.unit = unit
        self.state = state
        self.detail = detail
        super().__init__(f"{unit} is {state}" + (f"\n{detail}" if detail else ""))


class UsageError(SwarmkeeperError):
    """The command line or agent config is wrong."""


class SwarmError(ActuatorError):
    """A Docker Engine swarm call failed, or the node belongs to another swarm."""
