"""What an operator reads about a failed unit: status text and, if journald runs, its log.

``describe_from_properties`` renders a unit's D-Bus properties as ``systemctl status``-like
text (pure), so the state, the result, how the main process ended and when are shown even
where journald is not reachable (containers, the test managers), with systemd's ``Result``
said in words. ``journal_tail`` adds the last journal lines of the failed invocation (matched
by its invocation id, so an earlier run's lines never confuse the reader), or says why there
are none.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# si_code values systemd reports in ExecMainCode (see waitid(2))
_CLD = {1: "exited", 2: "killed", 3: "dumped", 4: "trapped", 5: "stopped", 6: "continued"}
_EXIT_NAMES = {
    0: "SUCCESS",
    1: "FAILURE",
    2: "INVALIDARGUMENT",
    3: "NOTIMPLEMENTED",
    4: "NOPERMISSION",
    5: "NOTINSTALLED",
    6: "NOTCONFIGURED",
    7: "NOTRUNNING",
    203: "EXEC",
    217: "USER",
    226: "NAMESPACE",
}


# systemd's Result values (systemd.exec(5), org.freedesktop.systemd1(5)) in an operator's words
RESULT_WORDS = {
    "exit-code": "the main process exited with a non-zero status",
    "signal": "the main process was killed by a signal",
    "core-dump": "the main process dumped core",
    "timeout": "a start, stop or runtime timeout was hit",
    "watchdog": "the watchdog was not pinged in time",
    "start-limit-hit": "it was started too often (start limit hit): `systemctl reset-failed` it",
    "resources": "systemd could not set it up (a missing file, directory, user or namespace, "
    "or a fork failed): see the journal lines",
    "protocol": "the service broke the protocol of its Type= (e.g. no PID file, no READY=1)",
    "oom-kill": "the kernel's OOM killer stopped it: it needs more memory",
    "exec-condition": "an ExecCondition= command failed",
    "condition": "a Condition...= setting was not met",
    "dependency": "a unit it requires failed",
}


def result_text(result: str) -> str:
    """``resources: systemd could not set it up …``; the bare value if unknown."""
    words = RESULT_WORDS.get(result)
    return f"{result}: {words}" if words else result


def invocation_hex(value: object) -> str:
    """InvocationID is a D-Bus byte array: its hex form is what the journal records."""
    if isinstance(value, bytes | bytearray | list) and any(value):
        return bytes(value).hex()
    return ""


def journal_args(name: str, invocation: str, lines: int, *, user: bool) -> list[str]:
    """journalctl arguments for the last ``lines`` of one invocation of ``name`` (pure).

    The unit's own output carries ``_SYSTEMD_INVOCATION_ID``; the manager's messages about it
    carry ``INVOCATION_ID`` (system) or ``USER_INVOCATION_ID`` (user): any of the three. With
    no invocation id (never started) the unit's lines are the best there is."""
    args = ["--no-pager", "-q", "-o", "short-iso", "-n", str(lines)]
    if user:
        args.insert(0, "--user")
    if not invocation:
        return [*args, "-u", name]
    return [*args, f"_SYSTEMD_INVOCATION_ID={invocation}", "+", f"INVOCATION_ID={invocation}",
            "+", f"USER_INVOCATION_ID={invocation}"]  # fmt: skip


def _timestamp(usec: object) -> str:
    if not isinstance(usec, int) or usec <= 0:
        return ""
    return datetime.fromtimestamp(usec / 1e6, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def exit_text(code: int, status: int) -> str:
    """``code=exited, status=1/FAILURE`` as systemctl prints it."""
    kind = _CLD.get(code, str(code))
    if code in (2, 3):
        try:
            sig = signal.Signals(status).name.removeprefix("SIG")
        except ValueError:
            sig = str(status)
        return f"code={kind}, signal={sig}"
    name = _EXIT_NAMES.get(status)
    return f"code={kind}, status={status}" + (f"/{name}" if name else "")


def _exec_lines(props: Mapping[str, Any]) -> list[str]:
    lines = []
    for key in ("ExecStartPre", "ExecStart", "ExecStartPost", "ExecReload", "ExecStop"):
        for entry in props.get(key) or []:
            # (path, argv, ignore_errors, start_ts, start_mono, exit_ts, exit_mono, pid, code, status)
            try:
                _path, argv, _ign, _s, _sm, _e, _em, pid, code, status = entry
            except (TypeError, ValueError):
                continue
            if not pid:
                continue
            ended = f" ({exit_text(code, status)})" if code else ""
            lines.append(f"    Process: {pid} {key}={' '.join(argv)}{ended}")
    return lines


def describe_from_properties(
    name: str, load_state: str, active_state: str, sub_state: str, props: Mapping[str, Any]
) -> str:
    """A short multi-line status text for ``name`` from its Unit (+ Service) properties."""
    mark = {"active": "●", "failed": "×", "inactive": "○"}.get(active_state, "●")
    desc = props.get("Description") or ""
    out = [f"{mark} {name}" + (f" - {desc}" if desc and desc != name else "")]
    fragment = props.get("FragmentPath") or ""
    file_state = props.get("UnitFileState") or ""
    where = "; ".join(x for x in (fragment, file_state) if x)
    out.append(f"     Loaded: {load_state}" + (f" ({where})" if where else ""))
    result = props.get("Result") or ""
    active = f"     Active: {active_state}"
    if sub_state and sub_state != active_state:
        active += f" ({sub_state})"
    if result and result != "success":
        active += f" (Result: {result_text(result)})"
    since_key = {
        "active": "ActiveEnterTimestamp",
        "failed": "InactiveEnterTimestamp",
        "inactive": "InactiveEnterTimestamp",
    }.get(active_state, "StateChangeTimestamp")
    since = _timestamp(props.get(since_key))
    out.append(active + (f" since {since}" if since else ""))
    out.extend(_exec_lines(props))
    code, status = props.get("ExecMainCode"), props.get("ExecMainStatus")
    main_pid = props.get("ExecMainPID") or props.get("MainPID") or 0
    if isinstance(code, int) and code and isinstance(status, int):
        out.append(f"   Main PID: {main_pid} ({exit_text(code, status)})")
    elif main_pid:
        out.append(f"   Main PID: {main_pid}")
    restarts = props.get("NRestarts")
    if isinstance(restarts, int) and restarts:
        out.append(f"   Restarts: {restarts}")
    if load_state == "not-found":
        out.append(f"  (no unit file for {name})")
    invocation = invocation_hex(props.get("InvocationID"))
    if invocation:
        out.append(f" Invocation: {invocation}")
    return "\n".join(out)


async def journal_tail(
    name: str, lines: int, *, user: bool, socket: Path, invocation: str = ""
) -> str:
    """The invocation's last journal lines, or one line saying why there are none."""
    journalctl = shutil.which("journalctl")
    if journalctl is None:
        return "(no journal lines: journalctl is not installed on this node)"
    if not await asyncio.to_thread(socket.is_socket):
        return f"(no journal lines: journald is not running here ({socket} is missing))"
    args = [journalctl, *journal_args(name, invocation, lines, user=user)]
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""},
        )
    except OSError as e:
        return f"(no journal lines: cannot run journalctl: {e})"
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()  # our own child, not yet reaped: the pid is still ours
        await proc.wait()
        return "(no journal lines: journalctl did not answer within 10 s)"
    text = out.decode(errors="replace").strip()
    return text or "(the journal has no lines for this invocation)"
