"""``swarmkeeper validate``: check a state tree and list every problem as path:line."""

from __future__ import annotations

import argparse

from reconciler.commands._common import add_source_options, load_tree
from reconciler.commands._output import print_json, wants_json

NAME = "validate"
HELP = "validate state/ and units/ of a directory or revision (exit 1 listing every problem)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    from reconciler.desired import load_state
    from reconciler.errors import InvalidDesiredState

    tree = load_tree(args)
    where = args.repo if args.rev is None else f"{args.repo}@{tree.revision[:12]}"
    try:
        state = load_state(tree)
    except InvalidDesiredState as e:
        if not wants_json(args):
            raise  # the CLI prints every problem and exits 1
        print_json("Validation", {"repo": args.repo, "revision": str(tree.revision),
                                  "valid": False, "problems": [
            {"path": p.path, "line": p.line, "message": p.message} for p in e.problems]})  # fmt: skip
        return 1
    if wants_json(args):
        print_json("Validation", {
            "repo": args.repo, "revision": str(tree.revision), "valid": True, "problems": [],
            "cluster": state.cluster.name, "managers": state.cluster.managers,
            "nodes": sorted(state.nodes),
        })  # fmt: skip
        return 0
    print(
        f"ok: {where}: cluster {state.cluster.name}, {state.cluster.managers} manager(s), "
        f"{len(state.nodes)} node file(s), "
        f"{sum(len(r.units) for r in state.roles.values())} role unit entries"
    )
    return 0
