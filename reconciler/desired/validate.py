"""Load and validate a whole state tree: every problem, all at once, as ``path:line:``.

``load_state(tree)`` returns a ``State`` (validated models plus the tree they came from) or
raises ``InvalidDesiredState`` listing every problem found. Shape checks come from the
pydantic models in ``schema.py``; the rules that span files (referenced units and sources
exist, nodes only remove units their role has, nothing is listed twice) live here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic

from reconciler.desired.schema import (
    MAX_FILE_BYTES,
    ClusterFile,
    FileEntry,
    NodeFile,
    RoleFile,
    UnitEntry,
)
from reconciler.desired.tree import MAX_TREE_BYTES, MAX_TREE_FILES, RepoTree
from reconciler.desired.yamlpos import Path_, Positions, load_yaml, pydantic_problems
from reconciler.errors import InvalidDesiredState, Problem

ROLES = ("manager", "worker")
ENV_PATH = "/etc/swarmkeeper/node.env"
RESERVED_VARS = frozenset(
    {
        "SWARMKEEPER_NODE", "SWARMKEEPER_ROLE", "SWARMKEEPER_CLUSTER", "SWARMKEEPER_PREFIX",
        "SWARMKEEPER_MANAGERS", "PRIVATE_IPV4", "ETCD_ENDPOINTS",
    }
)  # fmt: skip
_NODE_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")

M = TypeVar("M", bound=pydantic.BaseModel)


@dataclass(frozen=True, slots=True)
class State:
    """A validated state tree."""

    tree: RepoTree
    cluster: ClusterFile
    roles: dict[str, RoleFile]
    nodes: dict[str, NodeFile]
    # role -> file path -> (state file, line) of its entry, for node-side policy problems
    file_lines: dict[str, dict[str, tuple[str, int]]] = field(default_factory=dict)


class _Checker:
    def __init__(self, tree: RepoTree) -> None:
        self.tree = tree
        self.problems: list[Problem] = []
        self.partial: set[str] = set()  # files read without their failing keys
        self.checked: set[str] = set()  # unit files already checked (listed by several roles)

    def add(self, path: str, line: int, message: str) -> None:
        # a name may hold any character; a problem stays on one line
        one_line = message.replace("\r", "\\r").replace("\n", "\\n")
        self.problems.append(Problem(path, line, one_line))

    def read(self, path: str) -> bytes | None:
        real, why = self.tree.resolve(path)
        if real is None:
            if "does not exist" not in why:
                self.add(path, 0, f"{why}: replace it with a regular file")
            return None
        return self.tree.files[real]

    def model(self, path: str, model: type[M]) -> tuple[M | None, Positions]:
        data = self.read(path)
        if data is None:
            return None, Positions()
        if len(data) > MAX_FILE_BYTES:
            self.add(path, 0, f"file is larger than {MAX_FILE_BYTES} bytes")
            return None, Positions()
        value, pos, problems = load_yaml(path, data)
        self.problems.extend(problems)
        if problems:
            return None, pos
        if value is None:
            value = {}
        if not isinstance(value, dict):
            self.add(path, pos.line(()), "expected a mapping of keys at the top level")
            return None, pos
        try:
            return model.model_validate(value), pos
        except pydantic.ValidationError as e:
            self.problems.extend(pydantic_problems(path, e, pos, model))
            return self._partial(path, model, value, e), pos

    def _partial(
        self, path: str, model: type[M], value: dict[Any, Any], err: pydantic.ValidationError
    ) -> M | None:
        """The file without its top-level keys that failed, so the checks of the rest still
        run (a bad ``files:`` mode must not hide a missing unit file). ``partial`` remembers
        the path: a partial model is checked but never used to render."""
        bad = {e["loc"][0] for e in err.errors(include_url=False) if e["loc"]}
        rest = {k: v for k, v in value.items() if k not in bad}
        self.partial.add(path)
        try:
            return model.model_validate(rest)
        except pydantic.ValidationError:
            return None  # the rest cannot stand alone (a required key failed)

    def unit_file(self, path: str, line: int, name: str) -> None:
        """A listed unit must have a file under units/ (templates serve their instances)."""
        candidates = [f"units/{name}"]
        if "@" in name and not name.split("@", 1)[1].startswith("."):
            candidates.append(f"units/{template_of(name)}")
        for cand in candidates:
            real, why = self.tree.resolve(cand)
            if real is not None:
                data = self.tree.files[real]
                if cand in self.checked:
                    return
                self.checked.add(cand)
                if len(data) > MAX_FILE_BYTES:
                    self.add(cand, 0, f"unit file is larger than {MAX_FILE_BYTES} bytes")
                else:
                    try:
                        data.decode("utf-8")
                    except UnicodeDecodeError:
                        self.add(cand, 0, "unit file is not UTF-8 text")
                    else:
                        for no, why in syntax_problems(data):
                            self.add(cand, no, why)
                return
            if "does not exist" not in why:
                self.add(path, line, f"unit {name}: {why}")
                return
        self.add(path, line, f"unit file units/{name} not found: add it or remove this entry")

    def units(self, path: str, pos: Positions, key: str, entries: list[UnitEntry]) -> None:
        seen: dict[str, int] = {}
        for i, u in enumerate(entries):
            line = pos.line((key, i))
            if u.name in seen:
                self.add(
                    path,
                    line,
                    f"unit {u.name} listed twice (first at line {seen[u.name]}): remove one",
                )
                continue
            seen[u.name] = line
            self.unit_file(path, line, u.name)

    def files(self, path: str, pos: Positions, entries: list[FileEntry]) -> None:
        seen: dict[str, int] = {}
        # a file above another one in the list is found when the lower one comes first, too
        for i, f in sorted(enumerate(entries), key=lambda e: e[1].path.count("/")):
            line = pos.line(("files", i))
            if f.path == ENV_PATH:
                self.add(
                    path, line, f"{ENV_PATH} is written by swarmkeeper itself: use cluster vars"
                )
            if f.path in seen:
                self.add(
                    path,
                    line,
                    f"file {f.path} listed twice (first at line {seen[f.path]}): remove one",
                )
            seen[f.path] = line
            if f.path in _parents(ENV_PATH):
                self.add(path, line, f"{f.path} is a directory of {ENV_PATH}: pick another path")
            for parent in _parents(f.path):
                if parent == ENV_PATH or parent in seen:
                    self.add(path, line, f"file {f.path} lies under the file {parent}: one "
                             "path cannot be both a file and a directory")  # fmt: skip
            if f.source is not None:
                real, why = self.tree.resolve(f.source)
                if real is None:
                    fix = (
                        "add it or fix the path"
                        if "does not exist" in why
                        else "use a regular file"
                    )
                    self.add(path, pos.line(("files", i, "source")), f"source {why}: {fix}")
                elif len(self.tree.files[real]) > MAX_FILE_BYTES:
                    self.add(f.source, 0, f"file is larger than {MAX_FILE_BYTES} bytes")


def _parents(p: str) -> list[str]:
    """``/a/b/c`` -> ``/a``, ``/a/b``."""
    parts = p.split("/")[1:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def _unit_text(content: bytes | str) -> str:
    return content.decode("utf-8", errors="replace") if isinstance(content, bytes) else content


def syntax_problems(content: bytes | str) -> list[tuple[int, str]]:
    """``(line, message)`` for each line of a unit file systemd would not read as meant.

    systemd (and ``systemd-analyze verify``) refuses a broken section header and ignores,
    with a warning, a line without ``=`` and an assignment before the first section: a
    silently ignored line is a mistake in a state repo, so all three are problems, in
    systemd's words plus the fix. Comments, empty lines and continuations (a trailing
    backslash; comment lines inside one are skipped) are fine.
    """
    out: list[tuple[int, str]] = []
    section = False
    continued = False
    # systemd ends a line at \n, \r, \r\n or NUL only (not at str.splitlines' others)
    for no, raw in enumerate(re.split(r"\r\n|[\r\n\0]", _unit_text(content)), start=1):
        line = raw.strip()
        if continued:
            if not line.startswith(("#", ";")):
                continued = line.endswith("\\")
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                out.append((no, f"Invalid section header '{line}': write it as [Section]"))
            section = True
            continue
        continued = line.endswith("\\")
        if "=" not in line:
            out.append((no, f"Missing '=' in '{line}' (systemd ignores the line): write Key=value"))
        elif not section:
            out.append(
                (
                    no,
                    "Assignment outside of section (systemd ignores it): put it under [Unit], "
                    "[Service] or another section",
                )
            )
    return out


def template_of(name: str) -> str:
    """``foo@bar.service`` -> ``foo@.service``."""
    base, _, rest = name.partition("@")
    return f"{base}@.{rest.rsplit('.', 1)[-1]}"


def _check_layout(c: _Checker) -> None:
    for p in sorted({*c.tree.files, *c.tree.links}):
        if not p.startswith("state/") or not p.endswith((".yaml", ".yml")):
            continue
        rest = p[len("state/") :]
        if rest == "cluster.yaml" or (
            rest.startswith(("roles/", "nodes/")) and rest.count("/") == 1
        ):
            if p.endswith(".yml"):
                c.add(p, 0, f"use the .yaml extension: rename to {p[:-4]}.yaml")
            continue
        c.add(
            p,
            0,
            "unexpected state file: expected state/cluster.yaml, state/roles/<role>.yaml or state/nodes/<node>.yaml",
        )


def _check_size(c: _Checker) -> None:
    """Bound what render and the node will hold, whoever built the tree."""
    count = len(c.tree.files) + len(c.tree.links)
    total = sum(len(b) for b in c.tree.files.values())
    if count > MAX_TREE_FILES or total > MAX_TREE_BYTES:
        c.add("state", 0, f"state/units/files hold {count} files and {total} bytes: at most "
              f"{MAX_TREE_FILES} files and {MAX_TREE_BYTES} bytes")  # fmt: skip


def _check_role_size(c: _Checker, path: str, rf: RoleFile) -> None:
    """One source may be listed under many paths: bound what a node renders, too."""
    total = 0
    for f in rf.files:
        data = f.content.encode() if f.content is not None else c.tree.read(f.source or "")
        total += len(data or b"")
    if total > MAX_TREE_BYTES:
        c.add(path, 0, f"files: renders {total} bytes, at most {MAX_TREE_BYTES}: split them")


def load_state(tree: RepoTree) -> State:
    """Validate the whole tree; raise ``InvalidDesiredState`` with every problem found."""
    c = _Checker(tree)
    _check_size(c)
    if c.problems:
        raise InvalidDesiredState(c.problems)
    _check_layout(c)
    if tree.resolve("state/cluster.yaml")[0] is None and "state/cluster.yaml" not in tree.links:
        # a problem names a file that exists (or its directory), never the missing one
        c.add("state/", 0, "cluster.yaml is missing: every state repo needs one "
              "(see docs/state-format.md, or `swarmkeeper init`)")  # fmt: skip
    cluster, cpos = c.model("state/cluster.yaml", ClusterFile)
    if cluster is not None:
        for k in sorted(set(cluster.vars) & RESERVED_VARS):
            c.add(
                "state/cluster.yaml",
                cpos.line(("vars", k)),
                f"vars key {k} is set by swarmkeeper itself: rename it",
            )

    roles: dict[str, RoleFile] = {}
    file_lines: dict[str, dict[str, tuple[str, int]]] = {}
    for name in tree.listdir("state/roles"):
        role = name.rsplit(".", 1)[0]
        if role not in ROLES:
            c.add(
                f"state/roles/{name}", 0, f"unknown role {role!r}: roles are {' and '.join(ROLES)}"
            )
    for role in ROLES:
        path = f"state/roles/{role}.yaml"
        if tree.resolve(path)[0] is None and path not in tree.links:
            c.add("state/roles/", 0, f"{role}.yaml is missing: the {role} role must be "
                  f"defined (create {path}; an empty file is fine)")  # fmt: skip
            continue
        rf, rpos = c.model(path, RoleFile)
        if rf is not None:
            c.units(path, rpos, "units", rf.units)
            c.files(path, rpos, rf.files)
            _check_role_size(c, path, rf)
            file_lines[role] = {
                f.path: (path, rpos.line(("files", i))) for i, f in enumerate(rf.files)
            }
            if path not in c.partial:  # node checks against a half-read role are noise
                roles[role] = rf

    nodes: dict[str, NodeFile] = {}
    for name in tree.listdir("state/nodes"):
        path = f"state/nodes/{name}"
        if not name.endswith(".yaml"):
            continue
        node = name[: -len(".yaml")]
        if not _NODE_NAME_RE.match(node):
            c.add(
                path, 0, f"node name {node!r} is not a valid host name: use a-z, 0-9, '-' and '.'"
            )
            continue
        nf, npos = c.model(path, NodeFile)
        if nf is None:
            continue
        _check_node(c, path, npos, nf, roles)
        nodes[node] = nf

    if c.problems:
        raise InvalidDesiredState(c.problems)
    assert cluster is not None  # no problems means cluster.yaml was valid
    return State(tree=tree, cluster=cluster, roles=roles, nodes=nodes, file_lines=file_lines)


def _check_node(
    c: _Checker, path: str, pos: Positions, nf: NodeFile, roles: dict[str, RoleFile]
) -> None:
    # a role file that failed validation would only produce follow-on noise here
    if (nf.role or "") not in roles and (nf.role is not None or len(roles) < len(ROLES)):
        c.units(path, pos, "units_add", nf.units_add)
        return
    candidates = [roles[nf.role]] if nf.role in roles else list(roles.values())
    role_units = {u.name for r in candidates for u in r.units}
    for i, name in enumerate(nf.units_remove):
        at: Path_ = ("units_remove", i)
        if name not in role_units:
            which = f"role {nf.role}" if nf.role else "any role"
            c.add(
                path,
                pos.line(at),
                f"units_remove: {name} is not a unit of {which}: remove this entry",
            )
    c.units(path, pos, "units_add", nf.units_add)
    if nf.role is not None:
        for i, u in enumerate(nf.units_add):
            if u.name in {x.name for x in roles.get(nf.role, RoleFile()).units}:
                c.add(
                    path,
                    pos.line(("units_add", i)),
                    f"units_add: {u.name} is already a unit of role {nf.role}",
                )


def validate_tree(tree: RepoTree) -> list[Problem]:
    """Every problem of the tree (empty when it is valid)."""
    try:
        load_state(tree)
    except InvalidDesiredState as e:
        return list(e.problems)
    return []
