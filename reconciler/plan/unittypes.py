"""What each kind of unit means to the engine, in one table. Pure.

systemd's unit types differ in what "up" is: a ``Type=simple`` service is active from the
fork on (so the health gate holds it for a settle window), a ``Type=notify`` one says when
it is ready, a plain ``Type=oneshot`` is inactive once it ran to success (and systemd
garbage-collects it, forgetting it ran), a timer or socket is up while it waits, a target
has no process at all. ``RULES`` holds, for every ``Kind``, what the gate waits for, what
counts as drift and what a content change does; the planner (``reconciler.plan``), the
actuator's health wait and ``UnitStatus.healthy`` all ask this module, and the table in
docs/apply.md is ``markdown_table()`` (a test holds the two equal).

Two facts systemd cannot give a fresh process are kept in the inventory per unit and
content (``Ran``): that a oneshot ran to success, and that a start was skipped because a
``Condition*=`` was false. A skipped start is neither a failure nor drift; a failed
``Assert*=`` fails the start job (job result ``assert``) and so the apply.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

RUNNING = frozenset({"active", "activating", "reloading"})
# The SubState of a service between a crash and its Restart=: "activating" then, yet down.
AUTO_RESTART = "auto-restart"


def restarting(sub_state: str, restarts: int = 0) -> bool:
    """Crash-looping: waiting to be restarted, or restarted by systemd while we watched.

    A ``Restart=always``/``on-failure`` service that dies at start is ``active`` for a
    moment between crashes, so its active state alone cannot tell; its SubState and the
    growth of its ``NRestarts`` can.
    """
    return sub_state == AUTO_RESTART or restarts > 0


class Kind(StrEnum):
    SIMPLE = "service Type=simple"
    EXEC = "service Type=exec"
    FORKING = "service Type=forking"
    IDLE = "service Type=idle"
    NOTIFY = "service Type=notify"
    DBUS = "service Type=dbus"
    ONESHOT = "service Type=oneshot"
    ONESHOT_REMAIN = "service Type=oneshot, RemainAfterExit=yes"
    SOCKET = "socket"
    TIMER = "timer"
    PATH = "path"
    TARGET = "target"
    MOUNT = "mount"
    TEMPLATE = "template x@.service (any type)"
    DROPIN = "drop-in x.service.d/name.conf"
    OTHER = "slice, swap, automount, scope"


class Ran(StrEnum):
    """What the inventory remembers of a unit's last start at its recorded content."""

    UNKNOWN = ""  # never started by us (template, triggered, masked) or not recorded
    UP = "up"  # came up (or, a plain oneshot, ran to success)
    SKIPPED = "skipped"  # a Condition*= was false: systemd did not start it


class Change(StrEnum):
    """What a content change of a running unit does (before ``on_change``)."""

    RESTART = "restart"  # or reload/ignore, as on_change says
    NOTHING = "nothing"


@dataclass(frozen=True, slots=True)
class Rule:
    up: str  # what the health gate waits for
    settle: bool  # "active" comes at the fork: hold it for the settle window
    finished_is_up: bool  # inactive after a run to success is its converged state
    started: bool  # swarmkeeper starts it (templates are instantiated by others)
    drift: str  # what counts as drift
    change: Change
    change_text: str


_SERVICE_DRIFT = "inactive or failed (stopped or crashed by hand)"
_NO_PROTOCOL = "active, and still active after the settle window"


def _service(up: str, settle: bool) -> Rule:
    return Rule(up, settle, False, True, _SERVICE_DRIFT, Change.RESTART, "restart (or on_change)")


RULES: dict[Kind, Rule] = {
    Kind.SIMPLE: _service(_NO_PROTOCOL, True),
    Kind.EXEC: _service(_NO_PROTOCOL + " (a binary that cannot run fails the job)", True),
    Kind.FORKING: _service(_NO_PROTOCOL + " (counted from the parent's exit)", True),
    Kind.IDLE: _service(_NO_PROTOCOL, True),
    Kind.NOTIFY: _service("active: the service sent READY=1 (no window)", False),
    Kind.DBUS: _service("active: its bus name was taken (no window)", False),
    Kind.ONESHOT: Rule(
        "ran to success (inactive, Result=success); recorded in the inventory",
        False,
        True,
        True,
        "failed; not inactive: systemd forgets a finished oneshot, the inventory does not",
        Change.RESTART,
        "run again, once per change",
    ),
    Kind.ONESHOT_REMAIN: Rule(
        "active (exited) after ExecStart= succeeded",
        False,
        False,
        True,
        _SERVICE_DRIFT,
        Change.RESTART,
        "run again (restart)",
    ),
    Kind.SOCKET: Rule(
        "active (listening)",
        False,
        False,
        True,
        "inactive or failed",
        Change.RESTART,
        "restart the socket (its service is restarted only if it runs and changed)",
    ),
    Kind.TIMER: Rule(
        "active (waiting)",
        False,
        False,
        True,
        "inactive or failed",
        Change.RESTART,
        "restart (re-schedules); the service it triggers is not started by us",
    ),
    Kind.PATH: Rule(
        "active (waiting)",
        False,
        False,
        True,
        "inactive or failed",
        Change.RESTART,
        "restart; the service it triggers is not started by us",
    ),
    Kind.TARGET: Rule(
        "active",
        False,
        False,
        True,
        "inactive",
        Change.NOTHING,
        "nothing: it has no process, and starting it again would start every unit it wants"
        " that is stopped; new dependencies apply when it next starts",
    ),
    Kind.MOUNT: Rule(
        "active (mounted)",
        False,
        False,
        True,
        "inactive or failed (unmounted by hand)",
        Change.RESTART,
        "restart (remount)",
    ),
    Kind.TEMPLATE: Rule(
        "nothing: never started or enabled",
        False,
        False,
        False,
        "only its file (edited or deleted by hand)",
        Change.NOTHING,
        "written only; instances listed as units are restarted with their own change",
    ),
    Kind.DROPIN: Rule(
        "its unit's: the unit is gated when the change restarts it",
        False,
        False,
        False,
        "only its file (edited or deleted by hand)",
        Change.RESTART,
        "daemon-reload, then restart (or on_change) of its unit if that runs; removed: the"
        " unit without it (vendor behaviour), restarted",
    ),
    Kind.OTHER: Rule(
        "active", False, False, True, "inactive or failed", Change.RESTART, "restart (or on_change)"
    ),
}

_BY_SUFFIX = {
    "socket": Kind.SOCKET,
    "timer": Kind.TIMER,
    "path": Kind.PATH,
    "target": Kind.TARGET,
    "mount": Kind.MOUNT,
}
_BY_TYPE = {
    "simple": Kind.SIMPLE,
    "exec": Kind.EXEC,
    "forking": Kind.FORKING,
    "idle": Kind.IDLE,
    "notify": Kind.NOTIFY,
    "notify-reload": Kind.NOTIFY,
    "dbus": Kind.DBUS,
}


def is_template(name: str) -> bool:
    return name.partition(".")[0].endswith("@")


def service_kind(service_type: str, remain_after_exit: bool) -> Kind:
    """The kind of a service from systemd's Type= (``""``: simple, systemd's default)."""
    if service_type == "oneshot":
        return Kind.ONESHOT_REMAIN if remain_after_exit else Kind.ONESHOT
    return _BY_TYPE.get(service_type or "simple", Kind.SIMPLE)


def kind_of(name: str, service_type: str = "", remain_after_exit: bool = False) -> Kind:
    """The row of ``RULES`` for unit ``name`` (an instance ``x@i.service`` is a service)."""
    if ".d/" in name:
        return Kind.DROPIN
    if is_template(name):
        return Kind.TEMPLATE
    suffix = name.rpartition(".")[2]
    if suffix == "service":
        return service_kind(service_type, remain_after_exit)
    return _BY_SUFFIX.get(suffix, Kind.OTHER)


def needs_settle(name: str, service_type: str) -> bool:
    """A unit whose "active" comes at the fork, before it is known to work."""
    return RULES[kind_of(name, service_type)].settle


def is_up(
    kind: Kind,
    active_state: str,
    result: str,
    *,
    invocation_id: str = "",
    skipped: bool = False,
    ran: Ran = Ran.UNKNOWN,
    sub_state: str = "",
) -> bool:
    """Converged: running; a oneshot that ran to success; or a start a condition skipped.

    ``ran`` is the inventory's record for the unit's current content: the one thing that
    tells a oneshot systemd garbage-collected after it ran from one that never ran, and a
    skipped start from a unit stopped by hand, once the process that saw them is gone.
    """
    if active_state in RUNNING:
        return not restarting(sub_state)
    if active_state != "inactive":
        return False
    if skipped or ran is Ran.SKIPPED:
        return True
    return (
        RULES[kind].finished_is_up
        and result == "success"
        and (bool(invocation_id) or ran is Ran.UP)
    )


def markdown_table() -> str:
    """The per-type table of docs/apply.md."""
    rows = [
        "| kind | up (what the health gate waits for) | drift | a content change |",
        "|---|---|---|---|",
    ]
    for k, r in RULES.items():
        rows.append(f"| {k} | {r.up} | {r.drift} | {r.change_text} |")
        if k is Kind.TEMPLATE:
            rows.append(
                "| instance x@i.service | as its Type= row | as its Type= row | as its Type= row"
                " (its file is the template's content) |"
            )
    return "\n".join(rows)
