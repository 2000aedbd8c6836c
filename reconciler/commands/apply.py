"""``swarmkeeper apply``: converge this node on its desired spec, or roll back.

Exit status: 0 converged, 1 invalid desired state (or another error), 3 rolled back
(a unit failed its health gate; the node is back on its last good revision).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from reconciler.commands import _node
from reconciler.commands._output import print_json

NAME = "apply"
HELP = "apply this node's desired units and files now (exit 3: a unit failed, rolled back)"

EXIT_CONVERGED = 0
EXIT_ERROR = 1
EXIT_ROLLED_BACK = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    _node.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    from reconciler import config
    from reconciler.plan import planner as P
    from reconciler.plan.result import ApplyResult, Outcome

    cfg = config.load(args)
    spec = _node.load_spec(cfg)

    async def go() -> ApplyResult:
        sd, engine = await _node.open_engine(cfg)
        try:
            return await engine.apply(spec)
        finally:
            await sd.close()

    result = asyncio.run(go())
    if args.json:
        print_json("ApplyResult", {"node": spec.node, **result.to_json()}, indent=2)
    else:
        for r in result.actions:
            print(f"  {r.result:<10} {P.describe(r.action)}")
        if result.rollback:
            print("rollback:")
            for r in result.rollback:
                print(f"  {r.result:<10} {P.describe(r.action)}")
        if result.outcome is Outcome.CONVERGED:
            what = f"{len(result.actions)} action(s)" if result.actions else "nothing to do"
            print(
                f"{spec.node}: converged on {spec.revision} ({what}, {result.drift} drift, "
                f"{result.duration * 1000:.0f} ms)"
            )
        else:
            print(f"{spec.node}: {result.outcome}: {result.error}", file=sys.stderr)
            if result.failure is not None:
                print(result.failure.detail, file=sys.stderr)
            print(f"{spec.node}: node is on {result.applied or 'nothing applied'}", file=sys.stderr)
    if result.outcome is Outcome.CONVERGED:
        return EXIT_CONVERGED
    return EXIT_ROLLED_BACK if result.outcome is Outcome.ROLLED_BACK else EXIT_ERROR
