"""``swarmkeeper validate``: check a state tree and list every problem as path:line."""

from __future__ import annotations

import argparse

from reconciler.commands._common import add_source_options, load_tree

NAME = "validate"
HELP = "validate state/ and units/ of a directory or revision (exit 1 listing every problem)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_source_options(p)


def run(args: argparse.Namespace) -> int:
    from reconciler.desired import load_state

    tree = load_tree(args)
    state = load_state(tree)  # raises InvalidDesiredState, printed by the CLI
    where = args.repo if args.rev is None else f"{args.repo}@{tree.revision[:12]}"
    print(
        f"ok: {where}: cluster {state.cluster.name}, {state.cluster.managers} manager(s), "
        f"{len(state.nodes)} node file(s), "
        f"{sum(len(r.units) for r in state.roles.values())} role unit entries"
    )
    return 0
