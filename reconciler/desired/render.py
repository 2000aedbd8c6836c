"""Render one node's desired spec from a validated state: pure and deterministic.

The same tree and node facts always give the same ``NodeSpec`` (units in role order, files
sorted by path, the environment file written key by key in a fixed order), so two nodes
that render the same commit agree byte for byte, and a re-render of an unchanged commit
plans nothing.
"""

from __future__ import annotations

from reconciler.desired.schema import NodeFile, RoleFile, UnitEntry
from reconciler.desired.tree import RepoTree
from reconciler.desired.validate import ENV_PATH, State, load_state, template_of
from reconciler.errors import InvalidDesiredState, Problem
from reconciler.models import (
    CheckKind,
    Cluster,
    FileSpec,
    HealthCheck,
    NodeFacts,
    NodeName,
    NodeSpec,
    Notifier,
    OnChange,
    Registration,
    Role,
    UnitName,
    UnitSpec,
)


def render(tree: RepoTree, facts: NodeFacts) -> NodeSpec:
    """Validate ``tree`` and render the spec of the node ``facts`` describes."""
    return render_state(load_state(tree), facts)


def cluster_of(state: State) -> Cluster:
    c = state.cluster
    return Cluster(
        name=c.name,
        managers=c.managers,
        prefix=c.prefix,
        max_unavailable=c.rollout.max_unavailable,
        vars=tuple(sorted(c.vars.items())),
        notify=tuple(
            Notifier(
                type=n.type,
                url_env=n.url_env or "",
                url_file=n.url_file or "",
                channel=n.channel,
                min_severity=n.min_severity,
            )
            for n in c.notify
        ),
    )


def role_of(state: State, facts: NodeFacts) -> Role:
    """The node file's role wins (it is the desired state); else the node's own fact."""
    nf = state.nodes.get(facts.name)
    if nf is not None and nf.role is not None:
        return Role(nf.role)
    if facts.role is not None:
        return facts.role
    path = f"state/nodes/{facts.name}.yaml"
    if nf is None:  # name only files that exist: say what to create instead
        known = ", ".join(sorted(state.nodes)) or "none"
        raise InvalidDesiredState([Problem("state/nodes/", 0,
            f"no {facts.name}.yaml (node files: {known}): create {path} with 'role:', "
            "or pass --role")])  # fmt: skip
    raise InvalidDesiredState(
        [Problem(path, 0, "node has no role: set 'role:' there or pass --role")]
    )


def render_state(state: State, facts: NodeFacts) -> NodeSpec:
    role = role_of(state, facts)
    nf = state.nodes.get(facts.name, NodeFile())
    cluster = cluster_of(state)
    rf: RoleFile = state.roles[role.value]
    removed = set(nf.units_remove)
    entries = [u for u in rf.units if u.name not in removed] + list(nf.units_add)
    units = tuple(_unit(state.tree, u) for u in entries)
    files = [
        FileSpec(
            path=f.path,
            content=f.content.encode()
            if f.content is not None
            else _read(state.tree, f.source or ""),
            mode=int(f.mode, 8),
        )
        for f in rf.files
    ]
    files.append(FileSpec(path=ENV_PATH, content=env_file(cluster, facts, role), mode=0o644))
    return NodeSpec(
        node=NodeName(facts.name),
        role=role,
        revision=state.tree.revision,
        cluster=cluster,
        units=units,
        files=tuple(sorted(files, key=lambda f: f.path)),
        paused=nf.paused,
        labels=tuple(sorted(nf.labels.items())),
        env_path=ENV_PATH,
    )


def env_file(cluster: Cluster, facts: NodeFacts, role: Role) -> bytes:
    """The node facts for units, read through ``EnvironmentFile=/etc/swarmkeeper/node.env``."""
    pairs = [
        ("SWARMKEEPER_NODE", facts.name),
        ("SWARMKEEPER_ROLE", role.value),
        ("SWARMKEEPER_CLUSTER", cluster.name),
        ("SWARMKEEPER_PREFIX", cluster.prefix),
        ("SWARMKEEPER_MANAGERS", str(cluster.managers)),
        ("PRIVATE_IPV4", facts.address),
        ("ETCD_ENDPOINTS", ",".join(_url(e) for e in facts.etcd_endpoints)),
        *cluster.vars,
    ]
    body = "".join(f"{k}={v}\n" for k, v in pairs)
    return (
        "# Written by swarmkeeper: this node's facts for its units. Do not edit.\n" + body
    ).encode()


def _url(endpoint: str) -> str:
    return endpoint if "://" in endpoint else f"http://{endpoint}"


def _read(tree: RepoTree, path: str) -> bytes:
    data = tree.read(path)
    if data is None:  # validation guarantees presence; keep render total anyway
        raise InvalidDesiredState([Problem(path, 0, "missing")])
    return data


def _unit(tree: RepoTree, u: UnitEntry) -> UnitSpec:
    content = tree.read(f"units/{u.name}")
    if content is None and "@" in u.name:
        content = tree.read(f"units/{template_of(u.name)}")
    if content is None:
        raise InvalidDesiredState([Problem(f"units/{u.name}", 0, "missing")])
    reg = None
    if u.registration is not None:
        r = u.registration
        if r.check.http is not None:
            check = HealthCheck(
                CheckKind.HTTP,
                r.check.http,
                tuple(sorted((r.check.expect_json or {}).items())),
            )
        elif r.check.tcp is not None:
            check = HealthCheck(CheckKind.TCP, r.check.tcp)
        else:
            check = HealthCheck(CheckKind.UNIT_ACTIVE)
        reg = Registration(name=r.name, port=r.port, check=check, interval=r.interval)
    return UnitSpec(
        name=UnitName(u.name),
        content=content,
        on_change=OnChange(u.on_change),
        enable=u.enable,
        timeout=u.timeout,
        register=reg,
        settle=u.settle,
    )
