"""The sandbox's footprint on the host: namespaces, links, mounts, cgroups and processes.

Every function here changes one thing on the machine and has its undo beside it; each undo
is safe to call when the thing is already gone, so ``down`` can run after a half-finished
``up``. Processes are signalled only after checking their command line (pids wrap quickly on
a busy machine), and cgroups are emptied with ``cgroup.kill`` before they are removed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from reconciler.errors import SwarmkeeperError

NETNS_DIR = Path("/run/netns")
CGROUP_ROOTS = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup/systemd"))
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SandboxError(SwarmkeeperError):
    """A step of the sandbox failed; the message says which and what it printed."""


def run(argv: Sequence[str], *, input: bytes | None = None, stdin: IO[bytes] | None = None,
        timeout: float = 120.0, check: bool = True) -> subprocess.CompletedProcess[bytes]:  # fmt: skip
    try:
        out = subprocess.run(list(argv), input=input, stdin=stdin, capture_output=True,
                             timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired as e:
        raise SandboxError(f"{' '.join(argv)}: no answer after {timeout:.0f} s") from e
    if check and out.returncode != 0:
        err = (out.stderr or out.stdout).decode(errors="replace").strip()[-2000:]
        raise SandboxError(f"{' '.join(argv)} failed ({out.returncode}): {err}")
    return out


# ---------------------------------------------------------------- network


def netns_exists(name: str) -> bool:
    return (NETNS_DIR / name).exists()


def add_netns(name: str) -> None:
    run(["ip", "netns", "add", name])
    run(["ip", "-n", name, "link", "set", "lo", "up"])


def del_netns(name: str) -> None:
    if netns_exists(name):
        run(["ip", "netns", "del", name], check=False)


def add_bridge(netns: str, address: str, prefix_len: int) -> None:
    run(["ip", "-n", netns, "link", "add", "br0", "type", "bridge"])
    run(["ip", "-n", netns, "addr", "add", f"{address}/{prefix_len}", "dev", "br0"])
    run(["ip", "-n", netns, "link", "set", "br0", "up"])


def link_node(bridge_netns: str, veth: str, node_netns: str, address: str, prefix_len: int,
              gateway: str) -> None:  # fmt: skip
    """A veth from the node's namespace (eth0) into the bridge, the node's address on eth0.

    The default route points at the bridge namespace, which has no uplink: tools that ask
    the routing table for "the" address find eth0's, and nothing can leave the sandbox.
    """
    run(["ip", "-n", node_netns, "link", "add", "eth0", "type", "veth", "peer", "name", veth,
         "netns", bridge_netns])  # fmt: skip
    run(["ip", "-n", bridge_netns, "link", "set", veth, "master", "br0", "up"])
    run(["ip", "-n", node_netns, "addr", "add", f"{address}/{prefix_len}", "dev", "eth0"])
    run(["ip", "-n", node_netns, "link", "set", "eth0", "up"])
    run(["ip", "-n", node_netns, "route", "add", "default", "via", gateway])


# ---------------------------------------------------------------- mounts


def mount_overlay(lower: Path, upper: Path, work: Path, merged: Path) -> None:
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged)])  # fmt: skip


def umount(path: Path) -> None:
    if not os.path.ismount(path):
        return
    if run(["umount", str(path)], check=False).returncode != 0:
        # still open by a dying process: detach now, freed when it is gone
        run(["umount", "-l", str(path)], check=False)


# ---------------------------------------------------------------- cgroups


def cgroup_dirs(name: str) -> tuple[Path, ...]:
    return tuple(root / name for root in CGROUP_ROOTS)


def make_cgroups(name: str) -> tuple[Path, ...]:
    dirs = cgroup_dirs(name)
    for d in dirs:
        d.mkdir(parents=True, exist_ok=True)
    return dirs


def cgroup_pids(d: Path) -> list[int]:
    pids: list[int] = []
    for procs in d.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


def kill_cgroup(name: str, timeout: float = 10.0) -> None:
    """Kill every process of the cgroup (both hierarchies), then remove its directories."""
    unified, legacy = cgroup_dirs(name)
    if (unified / "cgroup.kill").exists():
        with contextlib.suppress(OSError):
            (unified / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for d in (unified, legacy) if d.exists() for p in cgroup_pids(d)]
        if not left:
            break
        for p in left:  # the legacy tree has no cgroup.kill
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        time.sleep(0.1)
    for d in (unified, legacy):
        remove_cgroup_tree(d)


def remove_cgroup_tree(d: Path) -> None:
    if not d.exists():
        return
    for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            sub.rmdir()
    with contextlib.suppress(OSError):
        d.rmdir()


# ---------------------------------------------------------------- processes


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def ancestry(pid: int) -> set[int]:
    """``pid`` and every process above it (a wrapper such as ``timeout`` running us)."""
    seen: set[int] = set()
    while pid > 0 and pid not in seen:
        seen.add(pid)
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
    return seen


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_process(pid: int, marker: str, timeout: float = 10.0) -> None:
    """SIGTERM ``pid`` if its command line contains ``marker``; SIGKILL after ``timeout``."""
    if pid <= 0 or not any(marker in a for a in cmdline(pid)):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if alive(pid) and any(marker in a for a in cmdline(pid)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def daemon(argv: Sequence[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached from us (its own session, output to ``log``); its pid."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env={"PATH": PATH, "LANG": "C.UTF-8", **(env or {})},
        )  # fmt: skip
    return proc.pid
