"""``swarmkeeper drain NODE``: take a node out of the swarm in order.

Writes ``<prefix>/swarm/drain/<node>``. The swarm leader's agent demotes the node if it is a
manager (never below quorum), drains it and acknowledges; the node's own agent then leaves
the swarm, and the leader removes it from ``docker node ls`` after a grace period. The node
stays out until ``swarmkeeper drain --undo NODE``.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from reconciler.commands._etcd import add_etcd_options, operator, prefix_of, run_with_etcd
from reconciler.commands._output import print_json, wants_json

if TYPE_CHECKING:
    from reconciler.etcd.client import Etcd

NAME = "drain"
HELP = "drain a node and make it leave the swarm (undo with --undo)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("node", help="the node's name (as in state/nodes/<name>.yaml)")
    p.add_argument(
        "--undo",
        action="store_true",
        help="withdraw the request: the node rejoins on its next pass",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document")
    add_etcd_options(p)


async def drain(etcd: Etcd, prefix: str, node: str, *, undo: bool = False) -> bool:
    """Write (or delete) the drain request; True if something changed."""
    import time

    from reconciler import keys

    key = keys.swarm_drain(prefix, node)
    if undo:
        return await etcd.delete(key)
    value = json.dumps({"by": operator(), "at": time.time()})
    return await etcd.create_if_absent(key, value)


def run(args: argparse.Namespace) -> int:
    prefix = prefix_of(args)

    async def body(etcd: Etcd) -> int:
        changed = await drain(etcd, prefix, args.node, undo=args.undo)
        if wants_json(args):
            print_json("Drain", {"prefix": prefix, "node": args.node,
                                 "requested": not args.undo, "changed": bool(changed)})  # fmt: skip
        elif args.undo:
            print(f"{args.node}: drain withdrawn" if changed else f"{args.node}: was not drained")
        else:
            print(
                f"{args.node}: drain requested"
                if changed
                else f"{args.node}: drain already requested"
            )
        return 0

    return run_with_etcd(args, body)
