"""TCP forwarding from the host's loopback into a network namespace the sandbox owns.

The nodes' addresses exist only inside the sandbox's namespaces, yet operator commands
(``swarmkeeper status``, ``publish``, ``etcdctl``) run on the host. This process listens on
127.0.0.1 ports and, for each connection, opens a socket *inside* the target namespace
(``setns`` to it, ``socket()``, ``setns`` back: a socket keeps the namespace it was created
in) and copies bytes both ways. The host's network gets no address and no route; the only
traffic is on 127.0.0.1 and in the sandbox's own namespaces.

    python -m reconciler.sandbox.forward 127.0.0.1:PORT=/run/netns/NS=10.213.0.11:2379 ...
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import os
import socket
import sys
from dataclasses import dataclass

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@dataclass(frozen=True, slots=True)
class Route:
    listen_host: str
    listen_port: int
    netns: str
    target_host: str
    target_port: int


def parse_route(text: str) -> Route:
    """``HOST:PORT=NETNS_PATH=HOST:PORT`` (ValueError with the reason otherwise)."""
    parts = text.split("=")
    if len(parts) != 3:
        raise ValueError(f"{text!r}: expected LISTEN=NETNS=TARGET")
    lh, _, lp = parts[0].rpartition(":")
    th, _, tp = parts[2].rpartition(":")
    if not (lh and th and lp.isdigit() and tp.isdigit()):
        raise ValueError(f"{text!r}: LISTEN and TARGET must be HOST:PORT")
    return Route(lh, int(lp), parts[1], th, int(tp))


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def socket_in(netns: str) -> socket.socket:
    """A TCP socket created inside ``netns`` (this thread's namespace is restored after)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns, os.O_RDONLY)
    try:
        _setns(target)
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            _setns(own)
    finally:
        os.close(target)
        os.close(own)
    s.setblocking(False)
    return s


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _handle(route: Route, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
    loop = asyncio.get_running_loop()
    sock = socket_in(route.netns)
    try:
        await asyncio.wait_for(loop.sock_connect(sock, (route.target_host, route.target_port)), 5)
    except (OSError, TimeoutError):
        sock.close()
        cw.close()
        return
    ur, uw = await asyncio.open_connection(sock=sock)
    await asyncio.gather(_pipe(cr, uw), _pipe(ur, cw))


async def serve(routes: list[Route]) -> None:
    servers = []
    for r in routes:
        handler = functools.partial(_handle, r)
        servers.append(
            await asyncio.start_server(handler, r.listen_host, r.listen_port, reuse_address=True)
        )
    print("forwarding " + ", ".join(f"{r.listen_host}:{r.listen_port} -> {r.netns} "
                                    f"{r.target_host}:{r.target_port}" for r in routes), flush=True)  # fmt: skip
    await asyncio.gather(*(s.serve_forever() for s in servers))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str]) -> int:
    try:
        routes = [parse_route(a) for a in argv]
    except ValueError as e:
        print(f"forward: {e}", file=sys.stderr)
        return 2
    if not routes:
        print("forward: no routes given", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(routes))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
