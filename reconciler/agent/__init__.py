"""The node agent (control layer): its worker, one reconcile pass, reports, metrics, HTTP."""

from reconciler.agent.agent import Agent, AgentSettings
from reconciler.agent.passes import PassResult, Renderer, run_pass
from reconciler.agent.workqueue import WorkQueue

__all__ = ["Agent", "AgentSettings", "PassResult", "Renderer", "WorkQueue", "run_pass"]
