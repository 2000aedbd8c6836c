"""What an operator reads about a failed unit: status text and, if journald runs, its log.

``describe_from_properties`` renders a unit's D-Bus properties as ``systemctl status``-like
text (pure), so the state, the result, how the main process ended and when are shown even
where journald is not reachable (containers, the test managers). ``journal_tail`` adds the
last journal lines when journald's socket exists.
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
        active += f" (Result: {result})"
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
    return "\n".join(out)


async def journal_tail(name: str, lines: int, *, user: bool, socket: Path) -> str:
    """``journalctl -u name -n lines`` output, "" when journald or journalctl is missing."""
    journalctl = shutil.which("journalctl")
    if journalctl is None or not await asyncio.to_thread(socket.is_socket):
        return ""
    args = [journalctl, "--no-pager", "-q", "-o", "short-iso", "-n", str(lines), "-u", name]
    if user:
        args.insert(1, "--user")
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": ""},
        )
    except OSError:
        return ""
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()  # our own child, not yet reaped: the pid is still ours
        await proc.wait()
        return ""
    return out.decode(errors="replace").strip()
