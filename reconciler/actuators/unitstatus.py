"""``UnitStatus``: what systemd holds about one unit, and small pure rules over it.

Kept apart from ``systemd.py`` (the D-Bus client) so the planner and its tests can build and
judge statuses without importing dbus-fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from reconciler.plan.unittypes import restarting

UNIT_PATH_PREFIX = "/org/freedesktop/systemd1/unit/"
_LOADED = "loaded"


@dataclass(frozen=True, slots=True)
class UnitStatus:
    """What systemd holds about one unit right now."""

    name: str
    load_state: str  # loaded | not-found | error | masked | bad-setting
    active_state: str  # active | inactive | failed | activating | deactivating | reloading
    sub_state: str
    unit_file_state: str  # enabled | disabled | static | linked | "" ...
    invocation_id: str  # hex string, "" when never started
    main_pid: int
    result: str  # service Result ("success", "exit-code", ...) or "" for non-services
    service_type: str  # simple | oneshot | notify | forking | ... ("" for non-services)
    remain_after_exit: bool
    # True when the unit file on disk differs from what the manager loaded (a daemon-reload
    # is due even if our files look up to date, e.g. after an apply killed before its reload).
    need_daemon_reload: bool = False
    # The last start of the unit was skipped: a Condition*= was false (from the signal
    # systemd sent then: the unit itself may be garbage-collected since).
    skipped: bool = False
    n_restarts: int = 0  # systemd's NRestarts: automatic restarts since the last explicit start
    # ActiveEnterTimestampMonotonic: when the unit last became active, in µs of the kernel's
    # CLOCK_MONOTONIC (one clock for the host, its containers and nspawn nodes); 0 = never.
    active_since: int = 0
    # Automatic restarts seen while the health gate watched (0 outside wait_healthy).
    restarts: int = 0

    @property
    def healthy(self) -> bool:
        """Active, a oneshot that finished successfully, or a start a condition skipped.

        A oneshot that never ran looks the same once systemd garbage-collected the finished
        one (no InvocationID left), so "inactive + success" counts as healthy for oneshots:
        the gate asks right after the start job it waited for. A service crash-looping under
        ``Restart=`` (waiting to restart, or restarted while the gate watched) is not.
        """
        if restarting(self.sub_state, self.restarts):
            return False
        if self.active_state == "active" or (self.active_state == "inactive" and self.skipped):
            return True
        return (
            self.service_type == "oneshot"
            and self.active_state == "inactive"
            and self.result == "success"
        )

    @property
    def failed(self) -> bool:
        return self.active_state == "failed" or (
            self.load_state != _LOADED and self.load_state != ""
        )


def not_found(name: str) -> UnitStatus:
    return UnitStatus(name, "not-found", "inactive", "dead", "", "", 0, "", "", False)


def unit_path(name: str) -> str:
    """The unit's object path: sd-bus label escaping (alnum kept, the rest as ``_xx``)."""
    escaped = "".join(c if c.isascii() and c.isalnum() else f"_{ord(c):02x}" for c in name)
    return UNIT_PATH_PREFIX + (escaped or "_")


def settled(st: UnitStatus, job_id: int) -> bool:
    """No further change is coming without someone acting on the unit."""
    if st.load_state != _LOADED or st.active_state in ("active", "failed"):
        return True
    return st.active_state == "inactive" and job_id == 0
