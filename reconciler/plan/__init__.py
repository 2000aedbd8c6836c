"""The planner (pure core): from what a node runs to its desired spec, as ordered actions."""

from reconciler.plan.actions import Gate, Observed, Phase, Plan, describe, to_json
from reconciler.plan.applied import Inventory
from reconciler.plan.planner import plan

__all__ = ["Gate", "Inventory", "Observed", "Phase", "Plan", "describe", "plan", "to_json"]
