"""The node's own limits on ``files:``: which paths a revision may write, which modes.

Set in the agent's config (``files_allow_paths``, ``files_allow_modes``; cloud-config writes
them), never in git: a commit must not be able to widen its own rights, so whoever gets a
commit published is not root on every node by way of ``/etc/shadow`` or a setuid binary.
A revision that renders a file outside the policy is rejected by that node with the
``path:line:`` of the entry. Pure: the agent's renderer and ``swarmkeeper plan|apply`` on a
node render through ``render_allowed``, so a revision is refused the same way by both.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from reconciler.desired.render import render_state
from reconciler.desired.validate import State
from reconciler.errors import InvalidDesiredState, Problem
from reconciler.models import FileSpec, NodeFacts, NodeSpec

# What this repo's own state/ writes, plus the usual homes of service configuration. A
# prefix ending in "/" allows everything under it; any other entry allows that one path.
DEFAULT_ALLOWED_PATHS = (
    "/opt/", "/srv/", "/etc/motd", "/etc/vault/", "/etc/docker/daemon.json", "/etc/systemd/",
)  # fmt: skip


class ModeBit(StrEnum):
    SETUID = "setuid"
    SETGID = "setgid"
    WORLD_WRITABLE = "world-writable"


_BITS = {ModeBit.SETUID: 0o4000, ModeBit.SETGID: 0o2000, ModeBit.WORLD_WRITABLE: 0o002}


@dataclass(frozen=True, slots=True)
class FilesPolicy:
    allowed_paths: tuple[str, ...] = DEFAULT_ALLOWED_PATHS
    allowed_modes: frozenset[ModeBit] = frozenset()

    def allows_path(self, path: str) -> bool:
        return any(path.startswith(a) if a.endswith("/") else path == a for a in self.allowed_paths)

    def refused_bits(self, mode: int) -> list[ModeBit]:
        return [b for b, bit in _BITS.items() if mode & bit and b not in self.allowed_modes]


def parse_paths(value: object) -> tuple[str, ...]:
    """A list (or comma-separated string) of absolute paths or prefixes ending in '/'."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    out = tuple(str(i).strip() for i in items if str(i).strip())
    for p in out:
        if not p.startswith("/") or "/../" in p + "/" or "//" in p or "\x00" in p:
            raise ValueError(f"{p!r} is not an absolute path (a prefix ends in '/')")
    return out


def parse_modes(value: object) -> frozenset[ModeBit]:
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    out = set()
    for i in (str(x).strip() for x in items):
        if not i:
            continue
        try:
            out.add(ModeBit(i))
        except ValueError:
            raise ValueError(f"{i!r} is not one of {', '.join(ModeBit)}") from None
    return frozenset(out)


def check(
    policy: FilesPolicy,
    files: Iterable[FileSpec],
    lines: Mapping[str, tuple[str, int]],
    exempt: str = "",
) -> list[Problem]:
    """Every file of a rendered spec the policy refuses, at the line of its entry."""
    out: list[Problem] = []
    for f in files:
        if f.path == exempt:
            continue  # the node facts file is swarmkeeper's own
        where, line = lines.get(f.path, ("state/roles", 0))
        if not policy.allows_path(f.path):
            out.append(Problem(where, line,
                f"file {f.path} is outside this node's files policy (allowed: "
                f"{', '.join(policy.allowed_paths) or 'nothing'}): the node's operator may "
                "allow it with files_allow_paths in the agent config"))  # fmt: skip
        bits = policy.refused_bits(f.mode)
        if bits:
            out.append(Problem(where, line,
                f"file {f.path}: mode {f.mode:04o} is {' and '.join(bits)}, which this "
                "node's files policy refuses: drop the bit, or the node's operator may allow "
                "it with files_allow_modes in the agent config"))  # fmt: skip
    return out


def render_allowed(state: State, facts: NodeFacts, policy: FilesPolicy) -> NodeSpec:
    """The node's spec, as ``render_state`` gives it, if this node's ``policy`` allows every
    file in it; else InvalidDesiredState with each refused entry's ``path:line:``."""
    spec = render_state(state, facts)
    lines = state.file_lines.get(spec.role.value, {})
    refused = check(policy, spec.files, lines, spec.env_path)
    if refused:
        raise InvalidDesiredState(refused)
    return spec
