"""``swarmkeeper context [list|show]``: the operator contexts of ``~/.config/swarmkeeper``.

``list`` names every context and marks the one in use (``--context``, then
``$SWARMKEEPER_CONTEXT``, then ``current-context``); ``show`` prints the settings a command
would use, after flags' environment variables are applied, so "which cluster am I talking
to?" has an answer before anything is written. The file itself is edited by hand (see
docs/cli.md, "Contexts"); this command only reads it.
"""

from __future__ import annotations

import argparse
import os

from reconciler.commands._output import print_json, wants_json

NAME = "context"
HELP = "list the operator contexts, or show the settings commands would use"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list",
                   help="list (default) or show the context in use")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON document")


def run(args: argparse.Namespace) -> int:
    from reconciler.commands._context import config_path, load, pick, selected

    cfg = load()
    name, ctx = selected(args)
    if args.action == "list":
        names = sorted(cfg.contexts)
        if wants_json(args):
            print_json("ContextList", {"config": str(config_path()), "current": name,
                                       "contexts": names})  # fmt: skip
        elif not names:
            print(f"no contexts: {config_path()} does not define any (see docs/cli.md)")
        else:
            for n in names:
                print(("* " if n == name else "  ") + n)
        return 0
    shown = {
        "etcd": pick(None, "SWARMKEEPER_ETCD", ctx, "etcd", "127.0.0.1:2379"),
        "prefix": pick(None, "SWARMKEEPER_PREFIX", ctx, "prefix", "/swarmkeeper"),
        "ca": pick(None, "SWARMKEEPER_ETCD_CA", ctx, "ca", ""),
        "cert": pick(None, "SWARMKEEPER_ETCD_CERT", ctx, "cert", ""),
        "key": pick(None, "SWARMKEEPER_ETCD_KEY", ctx, "key", ""),
        "user": pick(None, "SWARMKEEPER_ETCD_USER", ctx, "user", ""),
        "repo": pick(None, "SWARMKEEPER_REPO", ctx, "repo", os.curdir),
    }
    if wants_json(args):
        print_json("Context", {"config": str(config_path()), "name": name, "settings": shown})
        return 0
    print(f"context: {name or '(none: environment and defaults)'}")
    for k, v in shown.items():
        print(f"  {k:<7} {v or '-'}")
    return 0
