"""Checks before ``sandbox up`` starts anything, and the leftovers check after ``down``.

Every problem is reported at once, each saying how to fix it, and nothing has been created
when they are: a wrong size, a directory in use, a missing binary or package, a node root
that is not built, namespaces of the same name already there.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from reconciler.errors import UsageError
from reconciler.sandbox import host, images, node, spec
from reconciler.sandbox.spec import Layout

# (binary, Debian package that ships it)
BINARIES = (
    (str(node.NSPAWN), "systemd-container"),
    (str(node.IGNITION), "ignition"),
    ("/usr/bin/etcdctl", "etcd-client"),
    ("/usr/bin/git", "git"),
    ("/usr/bin/nsenter", "util-linux"),
    ("/usr/sbin/ip", "iproute2"),
    ("/usr/bin/chroot", "coreutils"),
)
BUILD_ROOT = images.REPO_ROOT / "scripts/build-root.sh"


def node_root() -> Path:
    return images.cache_root() / "node-root"


def problems(lay: Layout, managers: int, workers: int, source: Path) -> list[str]:
    out = spec.check_counts(managers, workers)
    if os.geteuid() != 0:
        out.append("must run as root (namespaces, mounts, cgroups and nspawn need it)")
    for path, pkg in BINARIES:
        if not os.access(path, os.X_OK) and not shutil.which(Path(path).name):
            out.append(f"{path} is missing: apt-get install -y {pkg}")
    root = node_root()
    if not (root / ".complete").exists():
        out.append(f"no node root at {root}: build it with {BUILD_ROOT} (make node-root)")
    if not Path("/sys/fs/cgroup/unified/cgroup.procs").exists():
        out.append("no cgroup2 hierarchy at /sys/fs/cgroup/unified (the nodes run in it)")
    if lay.dir.exists() and (not lay.dir.is_dir() or any(lay.dir.iterdir())):
        out.append(f"{lay.dir} is not empty: another sandbox may live there "
                   f"(`swarmkeeper sandbox down --dir {lay.dir}`), or pick a new --dir")  # fmt: skip
    taken = [n for n in (lay.bridge_netns, *(x.netns for x in lay.nodes)) if host.netns_exists(n)]
    if taken:
        out.append(f"network namespaces {', '.join(taken)} exist (a sandbox in {lay.dir} that "
                   "was not taken down?): `ip netns del NAME` or `sandbox down`")  # fmt: skip
    if not (source / "state/cluster.yaml").exists():
        out.append(f"{source} holds no state/cluster.yaml: --state must name a checkout of "
                   "a state repo")  # fmt: skip
    return out


def check(lay: Layout, managers: int, workers: int, source: Path) -> Path:
    found = problems(lay, managers, workers, source)
    if found:
        raise UsageError("sandbox up: nothing was started:\n  " + "\n  ".join(found))
    return node_root()


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below ``directory``, deepest first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point == str(directory) or point.startswith(str(directory) + "/"):
                found.append(point)
    return sorted(found, key=lambda p: -p.count("/"))


def leftovers(lay: Layout) -> list[str]:
    """Everything of this sandbox still on the machine: processes, mounts, namespaces, links,
    cgroups (an empty list: ``down`` left nothing behind)."""
    out = [f"mount {m}" for m in mounts_under(lay.dir)]
    for name in (lay.bridge_netns, *(n.netns for n in lay.nodes)):
        if host.netns_exists(name):
            out.append(f"network namespace {name}")
    for d in host.cgroup_dirs(lay.cgroup_name):
        if d.exists():
            out.append(f"cgroup {d}")
    ours = host.ancestry(os.getpid())  # this command and what runs it name the dir too
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        if pid not in ours and any(str(lay.dir) in a for a in host.cmdline(pid)):
            out.append(f"process {pid}: {' '.join(host.cmdline(pid))[:120]}")
    return out
