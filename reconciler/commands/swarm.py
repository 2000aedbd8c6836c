"""``swarmkeeper swarm rotate-tokens``: rotate the swarm's join tokens and republish them.

Runs on a manager (it talks to the local engine's socket, ``--docker``): ``POST
/swarm/update`` with ``rotateWorkerToken``/``rotateManagerToken``, then writes the new tokens
to ``<prefix>/swarm/tokens``. Old tokens are refused from then on; nodes that join later
read the new ones, and a node that read a stale one re-reads it and retries.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from reconciler.commands._etcd import add_etcd_options, prefix_of, run_with_etcd
from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.actuators.swarm import JoinTokens
    from reconciler.etcd import Etcd

NAME = "swarm"
HELP = "Docker Swarm membership operations (rotate-tokens)"
DEFAULT_DOCKER = "unix:///var/run/docker.sock"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="swarm_command", metavar="SUBCOMMAND")
    rot = sub.add_parser("rotate-tokens", help="rotate the join tokens and republish them")
    rot.add_argument("--docker", default=os.environ.get("DOCKER_HOST", DEFAULT_DOCKER),
                     help="a manager's engine socket (default: $DOCKER_HOST or "
                     f"{DEFAULT_DOCKER})")
    rot.add_argument("--only", choices=["worker", "manager"],
                     help="rotate only this role's token (default: both)")
    add_etcd_options(rot)


async def rotate_tokens(etcd: Etcd, prefix: str, docker_host: str, *,
                        worker: bool = True, manager: bool = True) -> JoinTokens:
    """Rotate on the engine, then publish; returns the new tokens."""
    from reconciler import keys
    from reconciler.actuators.swarm import SwarmEngine
    from reconciler.errors import SwarmError
    from reconciler.swarmrecords import encode_tokens

    async with SwarmEngine(docker_host) as engine:
        if not (await engine.local()).control_available:
            raise SwarmError(f"{docker_host} is not a swarm manager: run this on a manager")
        tokens = await engine.rotate_tokens(worker=worker, manager=manager)
    await etcd.put(keys.swarm_tokens(prefix), encode_tokens(tokens))
    return tokens


def run(args: argparse.Namespace) -> int:
    if args.swarm_command != "rotate-tokens":
        raise UsageError("usage: swarmkeeper swarm rotate-tokens [--docker SOCK] [--etcd ...]")
    prefix = prefix_of(args)
    worker = args.only in (None, "worker")
    manager = args.only in (None, "manager")

    async def body(etcd: Etcd) -> int:
        await rotate_tokens(etcd, prefix, args.docker, worker=worker, manager=manager)
        which = "worker and manager" if worker and manager else args.only
        print(f"rotated the {which} join token(s); published under {prefix}/swarm/tokens")
        return 0

    return run_with_etcd(args, body)
