"""``swarmkeeper sandbox``: a whole cluster on this machine, booted by the real Ignition.

    swarmkeeper sandbox up --managers 3 --workers 2 --dir DIR [--state CHECKOUT] [--timeout S]
    swarmkeeper sandbox reboot NODE --dir DIR     # kill a node outright, boot it again
    swarmkeeper sandbox down --dir DIR

``up`` returns with every node converged and writes ``DIR/cluster.json`` (etcd endpoints on
127.0.0.1, prefix, the bare state repo, each node's name, role, address and PID 1). Runs as
root on a Debian host with systemd-container, ignition and the cached node root
(``make node-root``); see docs/sandbox.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reconciler.errors import UsageError

NAME = "sandbox"
HELP = "run a whole cluster on this machine: nodes booted by Ignition in systemd-nspawn"
DEFAULT_TIMEOUT = 600.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    up = sub.add_parser("up", help="create, boot and converge a sandbox cluster")
    up.add_argument("--managers", type=int, default=3, help="1, 3 or 5 (default 3)")
    up.add_argument("--workers", type=int, default=2, help="default 2")
    up.add_argument("--dir", required=True, help="an empty or new directory for everything")
    up.add_argument("--state", default=None, metavar="CHECKOUT",
                    help="checkout whose state/, units/ and files/ seed the state repo "
                    "(default: this swarmkeeper checkout)")  # fmt: skip
    up.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                    help="seconds to wait for etcd, swarm and convergence (default 600)")  # fmt: skip
    rb = sub.add_parser("reboot", help="kill a node's every process at once, then boot it again")
    rb.add_argument("node", metavar="NODE")
    rb.add_argument("--dir", required=True)
    rb.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    down = sub.add_parser("down", help="stop and remove everything the sandbox made")
    down.add_argument("--dir", required=True)


def _dir(text: str) -> Path:
    return Path(text).expanduser().resolve()


def run(args: argparse.Namespace) -> int:
    from reconciler.sandbox import cluster, images
    from reconciler.sandbox.host import SandboxError

    if args.action == "up":
        source = _dir(args.state) if args.state else images.REPO_ROOT
        d = _dir(args.dir)
        try:
            t = cluster.up(d, args.managers, args.workers, source, args.timeout)
        except SandboxError as e:
            # left running on purpose: the nodes' journals say why (nsenter -t PID -a journalctl)
            raise SandboxError(f"{e}\nsandbox up failed; what it started is recorded in "
                               f"{d / 'sandbox.json'}: look, then `swarmkeeper sandbox down "
                               f"--dir {d}`") from e  # fmt: skip
        print(f"sandbox up: {args.managers} managers, {args.workers} workers, all converged")
        print(t.report())
        print(f"cluster: {_dir(args.dir) / 'cluster.json'}")
        return 0
    if args.action == "reboot":
        t = cluster.reboot(_dir(args.dir), args.node, args.timeout)
        print(f"{args.node} rebooted and converged")
        print(t.report())
        return 0
    if args.action == "down":
        left = cluster.down(_dir(args.dir))
        if left:
            print("sandbox down: left behind:\n  " + "\n  ".join(left), file=sys.stderr)
            return 1
        print(f"sandbox down: {args.dir} removed, nothing left behind")
        return 0
    raise UsageError("sandbox: give an action: up, reboot or down (see --help)")
