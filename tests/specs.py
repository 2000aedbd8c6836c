"""Small NodeSpec builders shared by the planner's pure tests and the engine's real ones."""

from __future__ import annotations

from collections.abc import Sequence

from reconciler.models import (
    Cluster,
    FileSpec,
    NodeName,
    NodeSpec,
    Revision,
    Role,
    UnitName,
    UnitSpec,
)

ENV = "/etc/swarmkeeper/node.env"


def unit(
    name: str, body: str = "", *, install: bool = True, exec_start: str = "/bin/sleep infinity",
    **kw: object,
) -> UnitSpec:  # fmt: skip
    """A service unit: ``body`` lines go into [Service] before ExecStart."""
    text = f"[Unit]\nDescription={name}\n[Service]\n{body}ExecStart={exec_start}\n"
    if install:
        text += "[Install]\nWantedBy=default.target\n"
    return UnitSpec(UnitName(name), text.encode(), **kw)  # type: ignore[arg-type]


def spec(units: Sequence[UnitSpec], files: Sequence[FileSpec] = (), rev: str = "r1") -> NodeSpec:
    return NodeSpec(
        node=NodeName("n1"), role=Role.MANAGER, revision=Revision(rev), cluster=Cluster("c", 1),
        units=tuple(units), files=tuple(files),
    )  # fmt: skip
