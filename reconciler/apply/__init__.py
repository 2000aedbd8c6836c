"""The apply engine (shell layer): observe the node, execute a plan, gate on health, roll back."""

from reconciler.apply.engine import Engine
from reconciler.apply.result import ActionResult, ApplyResult, Failure, Outcome

__all__ = ["ActionResult", "ApplyResult", "Engine", "Failure", "Outcome"]
