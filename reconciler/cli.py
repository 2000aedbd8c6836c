"""The ``swarmkeeper`` command line: finds subcommands and maps errors to exit codes.

Each subcommand lives in its own module under ``reconciler/commands/`` and exposes ``NAME``,
``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Command modules import their
heavy dependencies (aetcd, dbus, git) inside ``run`` so ``--help`` and ``validate`` start fast.
Errors the package raises on purpose become one clear message and an exit status (bad input
1, an outage 4: see ``ExitCode``); only a bug shows a traceback. Global flags (``--log-level``,
``--color``, ``--context``) are accepted before or after the command, and a reader that goes
away (``| head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from reconciler import __version__
from reconciler import commands as commands_pkg
from reconciler.commands._output import ColorMode, ExitCode, print_json, use_color, wants_json
from reconciler.errors import (
    InvalidDesiredState,
    NodeBusy,
    NodeFault,
    Problem,
    SwarmkeeperError,
    TransientError,
)


def _command_modules() -> list[ModuleType]:
    mods = []
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        mods.append(importlib.import_module(f"{commands_pkg.__name__}.{info.name}"))
    return mods


GLOBAL_HELP = "global flags (accepted before or after the command)"


def _add_globals(p: argparse.ArgumentParser, *, top: bool) -> None:
    """The flags every command takes; below the top they default to "not given" so a
    value written before the command is not reset by the subcommand's parser."""
    d = (lambda v: v) if top else (lambda v: argparse.SUPPRESS)
    g = p.add_argument_group(GLOBAL_HELP)
    g.add_argument("--log-level", default=d("info"),
                   choices=["debug", "info", "warning", "error"])  # fmt: skip
    g.add_argument("--color", default=d("auto"), choices=[m.value for m in ColorMode],
                   help="colour output: auto (a terminal, unless $NO_COLOR is set), "
                   "always, never")  # fmt: skip
    g.add_argument("--context", default=d(None), metavar="NAME",
                   help="operator config context (default: $SWARMKEEPER_CONTEXT, then "
                   "current-context of ~/.config/swarmkeeper/config.yaml)")  # fmt: skip


def _sub_parsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser below ``p`` (commands and their actions)."""
    out = []
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for child in dict.fromkeys(a.choices.values()):
                out.append(child)
                out.extend(_sub_parsers(child))
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swarmkeeper",
        description="GitOps for the hosts of a Docker Swarm cluster: render, plan and apply "
        "the desired systemd units of a node, and run the agent that keeps it converged.",
        epilog="exit status: 0 ok, 1 bad input, 2 plan: changes pending, 3 status/wait: not "
        "converged, 4 unavailable (etcd or the git remote did not answer, or another apply holds "
        "the node: retry later), 5 wait: timed out",
    )
    parser.add_argument("--version", action="version", version=f"swarmkeeper {__version__}")
    _add_globals(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _command_modules():
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    for p in _sub_parsers(parser):
        _add_globals(p, top=False)
    return parser


def _error_json(args: argparse.Namespace, code: ExitCode, message: str,
                problems: tuple[Problem, ...] = ()) -> None:  # fmt: skip
    if not wants_json(args):
        return
    print_json("Error", {
        "command": str(getattr(args, "command", "") or ""),
        "exitCode": int(code),
        "reason": code.name.lower(),
        "message": message,
        "problems": [{"path": p.path, "line": p.line, "message": p.message} for p in problems],
    })  # fmt: skip


def _resolve(args: argparse.Namespace) -> None:
    if getattr(args, "_etcd_options", False):
        from reconciler.commands import _etcd

        _etcd.resolve(args)
    if getattr(args, "_source_options", False):
        from reconciler.commands import _common

        _common.resolve(args)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:
        # the reader went away (`status | head -1`): nothing left to say to anyone; point
        # stdout (and stderr) at /dev/null so the interpreter's final flush does not complain
        devnull = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):  # either may be the pipe (`2>&1 | head`)
            os.dup2(devnull, stream.fileno())
        return ExitCode.BROKEN_PIPE


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return ExitCode.ERROR
    from reconciler import log

    as_json = True if getattr(args, "json_logs", False) else None  # the agent's --json
    log.configure(args.log_level, json=as_json, colors=use_color(args.color, sys.stderr))
    try:
        try:
            _resolve(args)
            code: int = args._run(args)
            return code
        except BaseExceptionGroup as eg:
            # a task group (status --watch, wait) wraps what its body raised: judge the
            # one error inside as if it had been raised alone
            leaves = _leaves(eg)
            if leaves and all(isinstance(x, BrokenPipeError) for x in leaves):
                raise BrokenPipeError from None
            if len(leaves) != 1:
                raise
            raise leaves[0] from None
    except (SwarmkeeperError, KeyboardInterrupt) as e:
        return _report(args, e)
    finally:
        sys.stdout.flush()  # a broken pipe surfaces here, inside main's handler


def _leaves(eg: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for e in eg.exceptions:
        out.extend(_leaves(e) if isinstance(e, BaseExceptionGroup) else [e])
    return out


def _report(args: argparse.Namespace, e: BaseException) -> int:
    """The message and exit status of an error raised on purpose."""
    name = f"swarmkeeper {args.command}"
    if isinstance(e, KeyboardInterrupt):
        return 130
    if isinstance(e, InvalidDesiredState):
        for p in e.problems:
            print(p, file=sys.stderr)
        print(f"{len(e.problems)} problem(s) found", file=sys.stderr)
        _error_json(args, ExitCode.ERROR, f"{len(e.problems)} problem(s) found", e.problems)
        return ExitCode.ERROR
    # an outage, or another apply holding the node: retrying later helps. A node fault
    # (disk full, permission) does not go away by waiting: it is an error like the rest
    if isinstance(e, TransientError) and (isinstance(e, NodeBusy) or not isinstance(e, NodeFault)):
        print(f"{name}: unavailable: {e}", file=sys.stderr)
        _error_json(args, ExitCode.UNAVAILABLE, str(e))
        return ExitCode.UNAVAILABLE
    # UsageError, EtcdError, an actuator's refusal
    print(f"{name}: {e}", file=sys.stderr)
    _error_json(args, ExitCode.ERROR, str(e))
    return ExitCode.ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
