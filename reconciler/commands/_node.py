"""What ``plan``, ``apply`` (and the agent) share: options, rendering the spec, the engine.

Kept out of the command modules so ``swarmkeeper plan`` prints the very plan that
``swarmkeeper apply`` executes: both render the spec the same way and ask the same
``Engine``.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from reconciler import config
from reconciler.commands._common import is_url, open_repo
from reconciler.config import Config
from reconciler.models import NodeFacts, NodeName, NodeSpec

if TYPE_CHECKING:
    from reconciler.actuators.systemd import Systemd
    from reconciler.apply.engine import Engine


def add_arguments(p: argparse.ArgumentParser) -> None:
    config.add_options(p)
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def load_spec(cfg: Config) -> NodeSpec:
    """Render this node's desired spec from --repo/--rev (blocking: git, disk), refused
    as the agent refuses it where the node's files policy does not allow a file."""
    from reconciler.desired import load_state
    from reconciler.desired.filespolicy import render_allowed
    from reconciler.source import GitSource

    if is_url(cfg.repo):
        src = GitSource(cfg.repo, cfg.branch, cfg.state_dir / "git")
        src.ensure()
        rev = src.ensure_commit(cfg.rev) if cfg.rev else src.branch_head()
        tree = src.tree(rev)
    else:
        tree = open_repo(cfg.repo, cfg.rev)
    facts = NodeFacts(
        name=NodeName(cfg.node), role=cfg.role, address=cfg.address, etcd_endpoints=cfg.etcd
    )
    return render_allowed(load_state(tree), facts, cfg.files_policy)


async def open_engine(cfg: Config) -> tuple[Systemd, Engine]:
    from reconciler.actuators.systemd import Scope, Systemd
    from reconciler.apply.engine import Engine

    sd = await Systemd.connect(Scope(cfg.scope), address=cfg.bus_address, unit_dir=cfg.unit_dir)
    return sd, Engine(sd, cfg.state_dir, root=cfg.root, unit_dir=cfg.unit_dir)
