"""Parsing of the Engine API's swarm answers (pure; shapes as Docker 20.10 sends them)."""

from __future__ import annotations

import pytest

from reconciler.actuators.swarm import _token_refused
from reconciler.actuators.swarmnodes import (
    Availability,
    LocalState,
    _ts,
    manager_addresses,
    parse_info,
    parse_node,
)
from reconciler.models import Role

INFO_MANAGER = {
    "Swarm": {
        "NodeID": "n1",
        "NodeAddr": "10.0.0.1",
        "LocalNodeState": "active",
        "ControlAvailable": True,
        "Error": "",
        "RemoteManagers": [
            {"NodeID": "n2", "Addr": "10.0.0.2:2377"},
            {"NodeID": "n1", "Addr": "10.0.0.1:2377"},
        ],
        "Cluster": {"ID": "c1"},
    }
}
INFO_WORKER = {
    "Swarm": {
        "NodeID": "n4",
        "NodeAddr": "10.0.0.4",
        "LocalNodeState": "active",
        "ControlAvailable": False,
        "RemoteManagers": None,
    }
}
INFO_NONE = {
    "Swarm": {
        "NodeID": "",
        "LocalNodeState": "inactive",
        "ControlAvailable": False,
        "RemoteManagers": None,
        "Cluster": None,
    }
}


@pytest.mark.parametrize(
    ("info", "state", "role", "cluster", "managers"),
    [
        (INFO_MANAGER, LocalState.ACTIVE, Role.MANAGER, "c1", ("10.0.0.1:2377", "10.0.0.2:2377")),
        (INFO_WORKER, LocalState.ACTIVE, Role.WORKER, "", ()),
        (INFO_NONE, LocalState.INACTIVE, None, "", ()),
        ({}, LocalState.INACTIVE, None, "", ()),
    ],
)
def test_parse_info(info, state, role, cluster, managers) -> None:  # type: ignore[no-untyped-def]
    local = parse_info(info)
    assert (local.state, local.role, local.cluster_id, local.remote_managers) == (
        state,
        role,
        cluster,
        managers,
    )


def node(
    id_: str,
    role: str,
    *,
    leader: bool = False,
    reach: str = "reachable",
    state: str = "ready",
    addr: str = "",
) -> dict[str, object]:
    raw: dict[str, object] = {
        "ID": id_,
        "Version": {"Index": 42},
        "UpdatedAt": "2026-11-27T09:41:07.123456789Z",
        "Spec": {"Role": role, "Availability": "active"},
        "Description": {"Hostname": f"host-{id_}"},
        "Status": {"State": state, "Addr": addr},
    }
    if role == "manager":
        raw["ManagerStatus"] = {"Leader": leader, "Reachability": reach, "Addr": addr + ":2377"}
    return raw


def test_parse_node_and_manager_addresses() -> None:
    nodes = [
        parse_node(node("b", "manager", addr="10.0.0.2")),
        parse_node(node("a", "manager", leader=True, addr="10.0.0.9")),
        parse_node(node("c", "manager", reach="unreachable", addr="10.0.0.3")),
        parse_node(node("d", "worker", addr="10.0.0.4")),
    ]
    a = nodes[1]
    assert (a.role, a.leader, a.version, a.availability, a.hostname) == (
        Role.MANAGER,
        True,
        42,
        Availability.ACTIVE,
        "host-a",
    )
    assert nodes[3].reachability == "" and nodes[3].role is Role.WORKER
    assert manager_addresses(nodes) == ["10.0.0.9:2377", "10.0.0.2:2377"]  # leader first


def test_timestamps_with_nanoseconds() -> None:
    assert _ts("2026-11-27T09:41:07.123456789Z") == pytest.approx(1795772467.123456)
    assert _ts("2026-11-27T09:41:07Z") == pytest.approx(1795772467.0)
    assert _ts("") == 0.0


@pytest.mark.parametrize(
    ("msg", "refused"),
    [
        (
            "rpc error: code = InvalidArgument desc = A valid join token is necessary to join this "
            "cluster",
            True,
        ),
        ("invalid join token", True),
        (
            "Timeout was reached before node joined. The attempt to join the swarm will continue "
            "in the background.",
            False,
        ),
        ("This node is already part of a swarm.", False),
    ],
)
def test_token_refusal_wording(msg: str, refused: bool) -> None:
    assert _token_refused(msg) is refused
