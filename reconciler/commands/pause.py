"""``swarmkeeper pause NODE``: stop a node's agent from applying anything until resumed.

Writes ``<prefix>/nodes/<node>/pause`` (who, when, why). The agent watches it, finishes or
abandons its current pass, and reports ``paused``. A name etcd has never heard of is refused
(a typo would otherwise pause nothing) unless ``--force``, for a node not booted yet.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from reconciler.commands._etcd import add_etcd_options, operator, prefix_of, run_with_etcd
from reconciler.commands._output import print_json, wants_json
from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.etcd.client import Etcd

NAME = "pause"
HELP = "pause a node: its agent applies nothing until `swarmkeeper resume NODE`"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("node", help="the node's name (as in state/nodes/<name>.yaml)")
    p.add_argument("--reason", default="", help="why, shown by `swarmkeeper status`")
    p.add_argument("--force", action="store_true", help="pause a node etcd does not know yet")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    add_etcd_options(p)


def pause_key(prefix: str, node: str) -> str:
    """The node's pause key; a malformed node name is the operator's mistake."""
    from reconciler import keys

    try:
        return keys.node_pause(prefix, node)
    except ValueError as e:
        raise UsageError(str(e)) from None


async def known_node(etcd: Etcd, prefix: str, node: str) -> bool:
    from reconciler import keys

    return (
        await etcd.get(keys.node_status(prefix, node)) is not None
        or await etcd.get(keys.node_alive(prefix, node)) is not None
    )


def run(args: argparse.Namespace) -> int:
    from reconciler.status import utcnow

    prefix = prefix_of(args)
    key = pause_key(prefix, args.node)

    async def body(etcd: Etcd) -> int:
        if not args.force and not await known_node(etcd, prefix, args.node):
            raise UsageError(
                f"no node {args.node!r} has reported under {prefix}/nodes/ "
                "(use --force to pause it anyway)"
            )
        record = {"by": operator(), "at": utcnow(), "reason": args.reason}
        await etcd.put(key, json.dumps(record))
        if wants_json(args):
            print_json("Pause", {"prefix": prefix, "node": args.node, "paused": True, **record})
            return 0
        print(
            f"paused {args.node}: its agent applies nothing until `swarmkeeper resume {args.node}`"
        )
        return 0

    return run_with_etcd(args, body)
