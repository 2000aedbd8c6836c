"""``swarmkeeper resume NODE``: let a paused node's agent apply again.

Deletes ``<prefix>/nodes/<node>/pause``; the agent sees the delete on its watch and runs a
pass at once. Resuming a node that is not paused is harmless and says so.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from reconciler.commands._etcd import add_etcd_options, prefix_of, run_with_etcd
from reconciler.commands._output import print_json, wants_json
from reconciler.commands.pause import pause_key

if TYPE_CHECKING:
    from reconciler.etcd.client import Etcd

NAME = "resume"
HELP = "resume a paused node"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("node", help="the node's name")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    add_etcd_options(p)


def run(args: argparse.Namespace) -> int:
    key = pause_key(prefix_of(args), args.node)

    async def body(etcd: Etcd) -> int:
        was = await etcd.delete(key)
        if wants_json(args):
            print_json("Resume", {"node": args.node, "paused": False, "was_paused": bool(was)})
        elif was:
            print(f"resumed {args.node}")
        else:
            print(f"{args.node} was not paused")
        return 0

    return run_with_etcd(args, body)
