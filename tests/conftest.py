"""Shared pytest fixtures: thin wrappers over the context managers in ``tests/fixtures``.

Every test that starts a real service (etcd, git remotes, systemd user managers, dockerd,
agent processes) is marked ``services``: by the fixtures it requests, or because its module
uses the service fixtures directly. ``make test-fast`` runs the rest (``-m "not services"``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.dockernet import DockerLab
from tests.fixtures.dockernet import docker_lab as _docker_lab
from tests.fixtures.etcd import EtcdCluster, EtcdServer
from tests.fixtures.etcd import etcd_cluster as _etcd_cluster
from tests.fixtures.etcd import etcd_server as _etcd_server
from tests.fixtures.gitrepo import MINIMAL_STATE, StateRepo, make_state_repo
from tests.fixtures.nspawn import Node
from tests.fixtures.nspawn import pid1_node as _pid1_node
from tests.fixtures.systemd_user import UserManager
from tests.fixtures.systemd_user import user_manager as _user_manager

SERVICE_FIXTURES = frozenset(
    {"etcd_server", "etcd_cluster", "state_repo", "systemd_user", "systemd_user_factory",
     "docker_lab", "netns", "pid1_node", "pid1_node_factory"}
)  # fmt: skip
SERVICE_MODULES = frozenset(
    f"tests.fixtures.{m}"
    for m in (
        "etcd",
        "systemd_user",
        "dockernet",
        "agents",
        "swarmagents",
        "gitrepo",
        "lifecycle",
        "nspawn",
    )
)


def _needs_services(item: pytest.Item) -> bool:
    if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())):
        return True
    if item.get_closest_marker("slow") is not None or item.get_closest_marker("sandbox"):
        return True
    module = getattr(item, "module", None)
    return any(
        getattr(v, "__module__", None) in SERVICE_MODULES for v in vars(module or {}).values()
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _needs_services(item):
            item.add_marker(pytest.mark.services)


@pytest.fixture
def etcd_server() -> Iterator[EtcdServer]:
    """One real etcd 3.4 on free 127.0.0.1 ports; ``stop/start/kill/pause/resume``."""
    with _etcd_server() as srv:
        yield srv


@pytest.fixture
def etcd_cluster() -> Iterator[EtcdCluster]:
    """Three real etcd members; ``endpoints``, ``members``, ``leader()``, ``kill(i)``."""
    with _etcd_cluster(3) as cluster:
        yield cluster


@pytest.fixture
def state_repo(tmp_path_factory: pytest.TempPathFactory) -> StateRepo:
    """A real git repo (bare remote + work clone) holding a minimal valid state."""
    return make_state_repo(tmp_path_factory.mktemp("staterepo"), MINIMAL_STATE)


@pytest.fixture
def systemd_user(tmp_path: Path) -> Iterator[UserManager]:
    """A real ``systemd --user`` in its own mount namespace, cgroup, HOME and runtime dir."""
    with _user_manager(tmp_path, "node") as um:
        yield um


@pytest.fixture
def pid1_node(tmp_path: Path) -> Iterator[Node]:
    """A node booted with systemd as PID 1 (systemd-nspawn over a copy-on-write root), on the
    host's network, with this checkout's code runnable inside (``node.swarmkeeper(...)``)."""
    with _pid1_node(tmp_path, "node1") as node:
        yield node


@pytest.fixture
def pid1_node_factory(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Boot more PID-1 nodes by name (keyword arguments as ``tests.fixtures.nspawn.pid1_node``);
    all are torn down after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda name, **kw: stack.enter_context(_pid1_node(tmp_path, name, **kw))


@pytest.fixture
def systemd_user_factory(tmp_path: Path) -> Iterator[Callable[[str], UserManager]]:
    """Start more independent user managers by name (one per simulated node)."""
    with contextlib.ExitStack() as stack:
        yield lambda name: stack.enter_context(_user_manager(tmp_path, name))


@pytest.fixture(scope="module")
def docker_lab() -> Iterator[DockerLab]:
    """Four real dockerd engines (node1..node4) plus one spare (node5, not started), each in
    its own network namespace on a private bridge; shared by the tests of one module (they
    reset the engines' swarm state between tests)."""
    with _docker_lab(4, spare=1) as lab:
        yield lab
