"""The ``swarmkeeper`` command line: finds subcommands and maps errors to exit codes.

Each subcommand lives in its own module under ``reconciler/commands/`` and exposes ``NAME``,
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Command modules import their
heavy dependencies (aetcd, dbus, git) inside ``run`` so ``--help`` and ``validate`` start fast.
Errors the package raises on purpose become one clear message and an exit status; only a bug
shows a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from reconciler import __version__
from reconciler import commands as commands_pkg
from reconciler.errors import InvalidDesiredState, SwarmkeeperError, TransientError, UsageError


def _command_modules() -> list[ModuleType]:
    mods = []
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"{commands_pkg.__name__}.{info.name}"))
    return mods


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swarmkeeper",
        description="GitOps for the hosts of a Docker Swarm cluster: render, plan and apply "
        "the desired systemd units of a node, and run the agent that keeps it converged.",
    )
    parser.add_argument("--version", action="version", version=f"swarmkeeper {__version__}")
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    from reconciler import log

    log.configure(args.log_level)
    try:
        code: int = args._run(args)
        return code
    except InvalidDesiredState as e:
        for p in e.problems:
            print(p, file=sys.stderr)
        print(f"{len(e.problems)} problem(s) found", file=sys.stderr)
        return 1
    except UsageError as e:
        print(f"swarmkeeper {args.command}: {e}", file=sys.stderr)
        return 1
    except TransientError as e:
        print(f"swarmkeeper {args.command}: temporarily unavailable: {e}", file=sys.stderr)
        return 1
    except SwarmkeeperError as e:
        print(f"swarmkeeper {args.command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
