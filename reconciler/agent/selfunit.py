"""The agent's own unit: changes to it take effect by a restart after the pass, never during it.

A revision may change the unit the agent runs as (its command line, its image, a drop-in, an
environment file it reads). Restarting that unit in the restart phase would have systemd stop
the agent in the middle of its own pass. So the pass hands the engine a spec in which the
agent's unit is ``on_change: ignore`` (the new definition is written and daemon-reloaded like
any other, without a restart), finishes, writes its status and releases its rollout slot;
only then does the agent ask systemd for a ``RestartUnit`` job on its own unit (mode
``replace``) without waiting for it, and takes no further work. systemd stops the agent
(SIGTERM: a clean shutdown between passes) and starts the new definition, whose first pass
finds the node converged. Whether a restart is due is read from the plan of the unmodified
spec: the restart (or reload) the planner wants for the agent's unit, with its reason.

The unit is named by ``--self-unit``; by default it is read from the agent's own cgroup
(``/proc/self/cgroup``), which names the service when systemd runs the agent directly. In a
container the cgroup says nothing, so the container's unit passes ``--self-unit``.
Everything here is pure except ``detect``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from reconciler.models import NodeSpec, OnChange
from reconciler.plan.actions import Plan, ReloadUnit, RestartUnit


@runtime_checkable
class QueuesRestart(Protocol):
    """An actuator that can hand systemd a restart job without waiting for it."""

    async def queue_restart(self, name: str) -> str: ...


def unit_from_cgroup(text: str) -> str:
    """The service a ``/proc/PID/cgroup`` text places the process in; "" if none.

    The unified (``0::``) line first, then the ``name=systemd`` one (hybrid hierarchies).
    A delegated sub-cgroup below the service (``x.service/payload``) still names ``x.service``.
    """
    paths: dict[str, str] = {}
    for line in text.splitlines():
        _hierarchy, _, rest = line.partition(":")
        controllers, sep, path = rest.partition(":")
        if sep:
            paths.setdefault(controllers, path)
    for key in ("", "name=systemd"):
        for part in reversed(paths.get(key, "").split("/")):
            if part.endswith(".service"):
                return part
    return ""


def detect(cgroup_file: Path = Path("/proc/self/cgroup")) -> str:
    try:
        return unit_from_cgroup(cgroup_file.read_text())
    except OSError:
        return ""


def _ours(name: str, unit: str) -> bool:
    """``name`` is ``unit`` or a drop-in entry of it (``unit.d/10-x.conf``)."""
    return name == unit or name.startswith(unit + ".d/")


def defer(spec: NodeSpec, unit: str) -> NodeSpec:
    """``spec`` with ``unit`` never restarted or reloaded by the engine: its entry and the
    entries of its drop-ins (whose ``on_change`` acts on it) become ``ignore``."""
    if not unit or not any(
        _ours(x.name, unit) and x.on_change is not OnChange.IGNORE for x in spec.units
    ):
        return spec
    units = tuple(
        replace(x, on_change=OnChange.IGNORE) if _ours(x.name, unit) else x for x in spec.units
    )
    return replace(spec, units=units)


def removal(spec: NodeSpec, managed: frozenset[str], unit: str) -> str:
    """Why ``spec`` cannot be applied here, if it drops the agent's own unit: stopping it
    would kill the agent in the middle of the pass that stops it, leaving that pass half
    done and nothing on the node to finish it or to say so. "" if it keeps it (or the
    unit was never the revision's to remove)."""
    if not unit or unit not in managed or unit in spec.unit_names:
        return ""
    return (
        f"units: the revision removes {unit}, the unit this agent runs as; an agent cannot "
        f"remove itself: keep {unit} in this node's role, and take the node out by hand"
    )


def restart_due(plan: Plan, unit: str) -> str:
    """Why the plan of the unmodified spec would restart (or reload) ``unit``; "" if not."""
    if not unit:
        return ""
    for a in plan:
        if isinstance(a, RestartUnit | ReloadUnit) and a.unit == unit:
            return a.reason
    return ""
