"""Run one apply in this process and SIGKILL it after the Nth action: a node losing power.

Usage: python -m tests.crash_apply SPEC.pickle STATE_DIR ROOT ADDRESS UNIT_DIR N
Used by tests/test_apply.py to prove an interrupted apply is finished by the next run.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys
from pathlib import Path

from reconciler.actuators.systemd import Scope, Systemd
from reconciler.apply.engine import Engine
from reconciler.models import NodeSpec
from reconciler.plan import planner as P


async def main(
    spec: NodeSpec, state_dir: str, root: str, address: str, unit_dir: str, n: int
) -> None:
    sd = await Systemd.connect(Scope.USER, address=address, unit_dir=Path(unit_dir))
    seen = 0

    def after(a: P.Action) -> None:
        nonlocal seen
        seen += 1
        if seen >= n:
            os.kill(os.getpid(), signal.SIGKILL)

    await Engine(sd, Path(state_dir), root=Path(root), after_action=after).apply(spec)


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(pickle.loads(Path(a[0]).read_bytes()), a[1], a[2], a[3], a[4], int(a[5])))
