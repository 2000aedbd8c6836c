"""``swarmkeeper plan``: print what ``apply`` would do on this node now, with the reasons.

Exit status: 0 nothing to do, 2 changes pending, 1 error (invalid state, systemd unreachable).
"""

from __future__ import annotations

import argparse
import asyncio

from reconciler.commands import _node
from reconciler.commands._output import print_json, wants_json

NAME = "plan"
HELP = "show the actions apply would take on this node, with reasons (exit 2: changes pending)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    _node.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    from reconciler import config
    from reconciler.plan import planner as P

    cfg = config.load(args)
    spec = _node.load_spec(cfg)

    async def go() -> P.Plan:
        sd, engine = await _node.open_engine(cfg)
        try:
            return await engine.plan(spec)
        finally:
            await sd.close()

    plan = asyncio.run(go())
    if wants_json(args):
        doc = {
            "node": spec.node,
            "role": str(spec.role),
            "revision": spec.revision,
            "changes": bool(plan),
            "drift": P.drift_count(plan),
            "actions": [P.to_json(a) for a in plan],
        }
        print_json("Plan", doc, indent=2)
    elif not plan:
        print(f"{spec.node}: nothing to do (revision {spec.revision})")
    else:
        drift = P.drift_count(plan)
        print(
            f"{spec.node}: {len(plan)} action(s) to reach revision {spec.revision}"
            + (f", {drift} repairing drift" if drift else "")
        )
        for a in plan:
            print(f"  {a.PHASE:<14} {P.describe(a)}")
    return 2 if plan else 0
