"""``swarmkeeper render``: print the desired spec of one node (what plan/apply work from)."""

from __future__ import annotations

import argparse

from reconciler.commands._common import add_source_options, load_tree
from reconciler.commands._output import print_json

NAME = "render"
HELP = "render one node's desired units, files and environment file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_options(p)
    p.add_argument("--node", required=True, help="node name (matches state/nodes/<node>.yaml)")
    p.add_argument("--role", choices=["manager", "worker"], help="role when the node file has none")
    p.add_argument("--address", default="127.0.0.1", help="the node's private address")
    p.add_argument(
        "--etcd", default="127.0.0.1:2379", help="etcd endpoints HOST:PORT[,...] for the env file"
    )
    p.add_argument("--json", action="store_true", help="print the full spec as JSON")


def run(args: argparse.Namespace) -> int:
    from reconciler.desired import render
    from reconciler.desired.export import spec_to_dict, spec_to_text
    from reconciler.models import NodeFacts, NodeName, Role

    facts = NodeFacts(
        name=NodeName(args.node),
        role=Role(args.role) if args.role else None,
        address=args.address,
        etcd_endpoints=tuple(e for e in args.etcd.split(",") if e),
    )
    spec = render(load_tree(args), facts)
    if args.json:
        print_json("NodeSpec", spec_to_dict(spec), indent=2)
    else:
        print(spec_to_text(spec))
    return 0
