"""The swarm actuator: one node's Docker Engine, over its unix socket.

Observes the local swarm state (``GET /info``) and, on a manager, the node list; performs
init, join (every manager address in turn), promote/demote and drain (read-modify-write of
the node spec with its ``Version.Index``), leave, node removal and token rotation.

aiodocker covers info, init, join, leave and the node calls; ``POST /swarm/update`` (token
rotation) and ``GET /swarm/unlockkey`` are plain aiohttp calls on the same session.
Everything the engine refuses becomes a ``SwarmError``; a refused join token becomes
``TokenRefused`` so the caller can re-read the current token from etcd and retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any

import aiohttp
from aiodocker import Docker
from aiodocker.exceptions import DockerError

from reconciler.actuators.swarmnodes import (
    SWARM_PORT,
    Availability,
    JoinTokens,
    LocalState,
    LocalSwarm,
    SwarmNode,
    parse_info,
    parse_node,
)
from reconciler.errors import SwarmError
from reconciler.models import Role

API_VERSION = "v1.41"  # Docker 20.10; newer engines still serve it


class TokenRefused(SwarmError):
    """The managers refused the join token (rotated since it was read)."""


class NotReachable(SwarmError):
    """No manager address answered the join."""


def _token_refused(msg: str) -> bool:
    """The engine's wording for a wrong/rotated token ("A valid join token is necessary",
    "invalid join token", "... token rejected ...")."""
    m = msg.lower()
    return "join token" in m or "invalid token" in m or ("token" in m and "invalid" in m)


def _msg(e: DockerError) -> str:
    m = e.message
    return m.get("message", str(m)) if isinstance(m, dict) else str(m)


class SwarmEngine:
    """One engine's swarm API. ``async with SwarmEngine("unix:///run/docker.sock") as e``."""

    def __init__(self, docker_host: str, *, request_timeout: float = 30.0) -> None:
        if not docker_host.startswith("unix://"):
            raise SwarmError(f"only unix:// engine sockets are supported: {docker_host}")
        self.docker_host = docker_host
        self._timeout = aiohttp.ClientTimeout(total=request_timeout)
        self._session: aiohttp.ClientSession | None = None
        self._docker: Docker | None = None

    async def __aenter__(self) -> SwarmEngine:
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def docker(self) -> Docker:
        if self._docker is None:
            connector = aiohttp.UnixConnector(self.docker_host.removeprefix("unix://"))
            self._session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
            self._docker = Docker(
                # The connector carries the socket path; the URL host is a placeholder.
                url="unix://localhost",
                connector=connector,
                session=self._session,
                api_version=API_VERSION,
            )
        return self._docker

    async def close(self) -> None:
        if self._docker is not None:
            await self._docker.close()
        if self._session is not None:
            await self._session.close()
        self._docker = self._session = None

    async def _raw(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Any:
        """A call aiodocker lacks: same unix socket session, JSON in and out."""
        _ = self.docker
        assert self._session is not None
        url = f"http://localhost/{API_VERSION}/{path}"
        try:
            async with self._session.request(method, url, params=params, json=body) as r:
                data = await r.json(content_type=None) if r.content_length != 0 else None
                if r.status >= 400:
                    msg = data.get("message", data) if isinstance(data, dict) else data
                    raise SwarmError(f"{method} /{path}: {r.status} {msg}")
                return data
        except (aiohttp.ClientError, TimeoutError) as e:
            raise SwarmError(f"{method} /{path}: {e}") from e

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except DockerError as e:
            raise SwarmError(f"{what}: {_msg(e)}") from e
        except (aiohttp.ClientError, TimeoutError) as e:
            raise SwarmError(f"{what}: {e}") from e

    # ---- observe -------------------------------------------------------------------------

    async def local(self) -> LocalSwarm:
        return parse_info(await self._call("info", self.docker.system.info()))

    async def nodes(self) -> list[SwarmNode]:
        raw = await self._call("node ls", self.docker.nodes.list())
        return [parse_node(n) for n in raw]

    async def node(self, node_id: str) -> SwarmNode:
        return parse_node(
            await self._call("node inspect", self.docker.nodes.inspect(node_id=node_id))
        )

    async def tokens(self) -> JoinTokens:
        sw = await self._call("swarm inspect", self.docker.swarm.inspect())
        t = sw.get("JoinTokens") or {}
        return JoinTokens(worker=t.get("Worker", ""), manager=t.get("Manager", ""))

    async def unlock_key(self) -> str:
        data = await self._raw("GET", "swarm/unlockkey")
        return str((data or {}).get("UnlockKey", ""))

    # ---- act -----------------------------------------------------------------------------

    async def init(self, addr: str, *, heartbeat: float = 5.0) -> str:
        """``swarm init`` advertising/listening on the node's private address; the node id.

        A short dispatcher heartbeat lets managers notice a departed node in ~1–3 s instead
        of 9–15 s, so a drained node can be removed soon after it leaves.
        """
        spec = {"Dispatcher": {"HeartbeatPeriod": int(heartbeat * 1e9)}}
        node_id = await self._call(
            "swarm init",
            self.docker.swarm.init(
                advertise_addr=addr, listen_addr=f"{addr}:{SWARM_PORT}", swarm_spec=spec
            ),
        )
        return str(node_id)

    async def join(
        self,
        managers: Sequence[str],
        token: str,
        addr: str,
        *,
        attempt_timeout: float = 25.0,
    ) -> None:
        """Join through each manager address in turn until one accepts.

        The engine only ever uses the first remote address; for an unreachable one it
        answers after 20 s and keeps joining in the background (``pending``). Before the
        next address that background attempt is cancelled (``leave --force`` of a node that
        is not a member yet); after the last one it is left running, because it completes by
        itself when a partition heals. A refused token (the engine takes ~10 s to say so) is
        raised at once as ``TokenRefused``: the caller re-reads the current one.
        """
        if not managers:
            raise NotReachable("no manager address to join")
        errors = []
        for m in managers:
            remote = m if ":" in m else f"{m}:{SWARM_PORT}"
            try:
                await asyncio.wait_for(
                    self.docker.swarm.join(
                        remote_addrs=[remote],
                        join_token=token,
                        advertise_addr=addr,
                        listen_addr=f"{addr}:{SWARM_PORT}",
                    ),
                    attempt_timeout,
                )
                return
            except DockerError as e:
                msg = _msg(e)
                if _token_refused(msg):
                    raise TokenRefused(f"join via {remote}: {msg}") from e
                errors.append(f"{remote}: {msg}")
            except (aiohttp.ClientError, TimeoutError) as e:
                errors.append(f"{remote}: {e!r}")
            local = await self.local()
            if local.state is LocalState.ACTIVE:
                return  # the attempt finished in the background meanwhile
            # Still pending on the last address: let it go on in the background (it completes
            # by itself when a partition heals); before another address, cancel it.
            if local.state is LocalState.PENDING and m != managers[-1]:
                with contextlib.suppress(SwarmError):  # it may have given up meanwhile
                    await self.leave(force=True)
        raise NotReachable("join failed: " + "; ".join(errors))

    async def leave(self, *, force: bool = False) -> None:
        await self._call("swarm leave", self.docker.swarm.leave(force=force))

    async def _update_spec(self, node_id: str, **changes: str) -> SwarmNode:
        """Read-modify-write of the node spec; re-read and retry when the version moved."""
        for attempt in range(5):
            raw = await self._call("node inspect", self.docker.nodes.inspect(node_id=node_id))
            spec = dict(raw.get("Spec", {}))
            if all(spec.get(k) == v for k, v in changes.items()):
                return parse_node(raw)
            spec.update(changes)
            try:
                await self.docker.nodes.update(
                    node_id=node_id, version=int(raw["Version"]["Index"]), spec=spec
                )
                return await self.node(node_id)
            except DockerError as e:
                if "out of sequence" not in _msg(e) or attempt == 4:
                    raise SwarmError(f"node update {node_id} {changes}: {_msg(e)}") from e
        raise AssertionError("unreachable")

    async def set_role(
        self, node_id: str, role: Role, *, within: float = 30.0, wait: bool = True
    ) -> SwarmNode:
        """Promote/demote and (``wait``) until this manager's view agrees: a reachable
        manager, or no manager status at all."""
        node = await self._update_spec(node_id, Role=role.value)
        if not wait:
            return node
        return await self.wait_node(
            node_id,
            lambda n: (
                (n.role is Role.MANAGER and n.reachability == "reachable")
                if role is Role.MANAGER
                else (n.role is Role.WORKER and not n.reachability)
            ),
            within=within,
            what=f"{role} view",
        )

    async def set_availability(self, node_id: str, availability: Availability) -> SwarmNode:
        return await self._update_spec(node_id, Availability=availability.value)

    async def remove_node(self, node_id: str, *, force: bool = False) -> None:
        await self._call("node rm", self.docker.nodes.remove(node_id=node_id, force=force))

    async def rotate_tokens(self, *, worker: bool = True, manager: bool = True) -> JoinTokens:
        """``POST /swarm/update`` with the current spec and version, rotating tokens."""
        sw = await self._call("swarm inspect", self.docker.swarm.inspect())
        params = {
            "version": str(sw["Version"]["Index"]),
            "rotateWorkerToken": str(worker).lower(),
            "rotateManagerToken": str(manager).lower(),
        }
        await self._raw("POST", "swarm/update", params=params, body=sw["Spec"])
        return await self.tokens()

    async def unlock(self, key: str) -> None:
        await self._raw("POST", "swarm/unlock", body={"UnlockKey": key})

    # ---- wait ----------------------------------------------------------------------------

    async def wait_node(
        self,
        node_id: str,
        ok: Callable[[SwarmNode], bool],
        *,
        within: float,
        what: str,
        interval: float = 0.2,
    ) -> SwarmNode:
        """Poll this manager's view of a node until ``ok(node)`` (the engine has no node
        events on workers, so polling the local socket is the only portable way)."""
        deadline = time.monotonic() + within
        while True:
            node = await self.node(node_id)
            if ok(node):
                return node
            if time.monotonic() > deadline:
                raise SwarmError(f"node {node_id}: timed out waiting for {what}: {node}")
            await asyncio.sleep(interval)

    async def wait_local(
        self,
        ok: Callable[[LocalSwarm], bool],
        *,
        within: float,
        what: str,
        interval: float = 0.2,
    ) -> LocalSwarm:
        """Poll ``GET /info`` until ``ok(local)``, e.g. ControlAvailable after a promotion."""
        deadline = time.monotonic() + within
        while True:
            local = await self.local()
            if ok(local):
                return local
            if time.monotonic() > deadline:
                raise SwarmError(f"timed out waiting for {what}: {local}")
            await asyncio.sleep(interval)
