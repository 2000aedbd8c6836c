"""The apply engine (shell layer): observe the node, execute a plan, gate on health, roll back.

Its result values live in ``reconciler.plan.result`` so that the pure core can read them.
"""

from reconciler.apply.engine import Engine

__all__ = ["Engine"]
