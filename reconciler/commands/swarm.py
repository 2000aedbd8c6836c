"""``swarmkeeper swarm``: ``rotate-tokens`` and ``status`` of the swarm's etcd records.

``rotate-tokens`` rotates the swarm's join tokens and republishes them.

Runs on a manager (it talks to the local engine's socket, ``--docker``): ``POST
/swarm/update`` with ``rotateWorkerToken``/``rotateManagerToken``, then writes the new tokens
to ``<prefix>/swarm/tokens``. Old tokens are refused from then on; nodes that join later
read the new ones, and a node that read a stale one re-reads it and retries.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from reconciler.commands._etcd import add_etcd_options, prefix_of, run_with_etcd
from reconciler.commands._output import print_json
from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.actuators.swarmnodes import JoinTokens
    from reconciler.etcd.client import Etcd
    from reconciler.swarm.records import Snapshot

NAME = "swarm"
HELP = "Docker Swarm membership: rotate-tokens, status"
DEFAULT_DOCKER = "unix:///var/run/docker.sock"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="swarm_command", metavar="SUBCOMMAND")
    rot = sub.add_parser("rotate-tokens", help="rotate the join tokens and republish them")
    rot.add_argument(
        "--docker",
        default=os.environ.get("DOCKER_HOST", DEFAULT_DOCKER),
        help=f"a manager's engine socket (default: $DOCKER_HOST or {DEFAULT_DOCKER})",
    )
    rot.add_argument(
        "--only",
        choices=["worker", "manager"],
        help="rotate only this role's token (default: both)",
    )
    rot.add_argument("--json", action="store_true", help="print one JSON document")
    add_etcd_options(rot)
    stat = sub.add_parser("status", help="the swarm as etcd records it (never the tokens)")
    stat.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_etcd_options(stat)


def describe(snap: Snapshot) -> dict[str, Any]:
    """The swarm records as plain data, without the join tokens (they are secrets)."""
    c = snap.cluster
    nodes = {
        name: {
            "id": r.id,
            "addr": r.addr,
            "role": r.role,
            "state": r.state,
            "drain_requested": name in snap.drain,
            "drained": snap.drained.get(name) == r.id,
        }
        for name, r in sorted(snap.nodes.items())
    }
    for name in sorted(snap.drain - set(nodes)):
        nodes[name] = {
            "id": "",
            "addr": "",
            "role": "",
            "state": "",
            "drain_requested": True,
            "drained": False,
        }
    return {
        "phase": c.phase.value,
        "cluster_id": c.cluster_id,
        "created_by": c.claimed_by,
        "managers": list(c.manager_addrs),
        "tokens_published": snap.tokens is not None,
        "nodes": nodes,
    }


def format_status(d: dict[str, Any]) -> str:
    lines = [
        f"swarm: {d['phase']} {d['cluster_id'] or '-'} (by {d['created_by'] or '-'}); "
        f"managers: {', '.join(d['managers']) or '-'}; "
        f"tokens {'published' if d['tokens_published'] else 'MISSING'}",
        f"{'NODE':<16} {'ROLE':<8} {'STATE':<8} {'ADDRESS':<16} {'ENGINE NODE ID':<26} DRAIN",
    ]
    for name, n in d["nodes"].items():
        drain = "drained" if n["drained"] else ("requested" if n["drain_requested"] else "")
        lines.append(
            f"{name:<16} {n['role'] or '-':<8} {n['state'] or '-':<8} "
            f"{n['addr'] or '-':<16} {n['id'] or '-':<26} {drain}"
        )
    return "\n".join(lines)


async def rotate_tokens(
    etcd: Etcd, prefix: str, docker_host: str, *, worker: bool = True, manager: bool = True
) -> JoinTokens:
    """Rotate on the engine, then publish; returns the new tokens."""
    from reconciler import keys
    from reconciler.actuators.swarm import SwarmEngine
    from reconciler.errors import SwarmError
    from reconciler.swarm.records import encode_tokens

    async with SwarmEngine(docker_host) as engine:
        if not (await engine.local()).control_available:
            raise SwarmError(f"{docker_host} is not a swarm manager: run this on a manager")
        tokens = await engine.rotate_tokens(worker=worker, manager=manager)
    await etcd.put(keys.swarm_tokens(prefix), encode_tokens(tokens))
    return tokens


def run(args: argparse.Namespace) -> int:
    if args.swarm_command not in ("status", "rotate-tokens"):
        raise UsageError("usage: swarmkeeper swarm {rotate-tokens,status} [options]")
    prefix = prefix_of(args)
    if args.swarm_command == "status":

        async def show(etcd: Etcd) -> int:
            from reconciler.swarm.records import read

            d = describe(await read(etcd, prefix))
            if args.json:
                print_json("SwarmStatus", d, indent=2)
            else:
                print(format_status(d))
            return 0

        return run_with_etcd(args, show)
    worker = args.only in (None, "worker")
    manager = args.only in (None, "manager")

    async def body(etcd: Etcd) -> int:
        await rotate_tokens(etcd, prefix, args.docker, worker=worker, manager=manager)
        which = "worker and manager" if worker and manager else args.only
        if args.json:  # never the tokens themselves: they are secrets
            print_json("TokenRotation", {"prefix": prefix, "rotated": [
                r for r, on in (("worker", worker), ("manager", manager)) if on]})  # fmt: skip
            return 0
        print(f"rotated the {which} join token(s); published under {prefix}/swarm/tokens")
        return 0

    return run_with_etcd(args, body)
