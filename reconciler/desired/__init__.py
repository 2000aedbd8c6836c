"""Desired state: load, validate and render it. Pure: no I/O, no logging, no asyncio.

``render(tree, facts) -> NodeSpec`` is the entry point; ``validate_tree(tree)`` lists every
problem of a tree; ``load_state`` gives the validated models for callers that render many
nodes of one revision.
"""

from reconciler.desired.render import env_file, render, render_state
from reconciler.desired.tree import RepoTree
from reconciler.desired.validate import ENV_PATH, State, load_state, validate_tree

__all__ = [
    "ENV_PATH",
    "RepoTree",
    "State",
    "env_file",
    "load_state",
    "render",
    "render_state",
    "validate_tree",
]
