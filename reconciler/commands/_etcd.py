"""Options and helpers shared by the operator commands that talk to etcd.

``--etcd HOST:PORT[,...]`` (default ``$SWARMKEEPER_ETCD`` or ``127.0.0.1:2379``), ``--prefix``
(default ``$SWARMKEEPER_PREFIX`` or ``/swarmkeeper``), TLS files and a user; the password
comes only from ``$SWARMKEEPER_ETCD_PASSWORD`` (never on a command line, where ``ps`` shows
it). aetcd is imported only when a command runs, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.etcd.client import Etcd

T = TypeVar("T")


def add_etcd_options(p: argparse.ArgumentParser, *, prefix_default: str | None = None) -> None:
    """etcd flags; unset ones are filled by ``resolve`` (environment, context, default)."""
    p.set_defaults(_etcd_prefix_default=prefix_default, _etcd_options=True)
    p.add_argument(
        "--etcd",
        metavar="HOST:PORT[,...]",
        help="etcd endpoints (default: $SWARMKEEPER_ETCD, the context, or 127.0.0.1:2379)",
    )
    p.add_argument(
        "--prefix",
        help="the cluster's etcd key prefix (default: $SWARMKEEPER_PREFIX, the context, "
        "or /swarmkeeper)",
    )
    p.add_argument(
        "--etcd-ca", type=Path, help="CA bundle to verify etcd's certificate (turns TLS on)"
    )
    p.add_argument("--etcd-cert", type=Path, help="client certificate for etcd")
    p.add_argument("--etcd-key", type=Path, help="client key for etcd")
    p.add_argument("--etcd-user", help="etcd user (password from $SWARMKEEPER_ETCD_PASSWORD)")
    p.add_argument(
        "--etcd-timeout",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="per-request timeout; retries give up after twice this (default 3)",
    )


def resolve(args: argparse.Namespace) -> None:
    """Fill the etcd flags not given: ``$SWARMKEEPER_*``, then the operator context."""
    from reconciler.commands._context import pick, selected

    _, ctx = selected(args)
    args.etcd = pick(args.etcd, "SWARMKEEPER_ETCD", ctx, "etcd", "127.0.0.1:2379")
    args.prefix = pick(args.prefix, "SWARMKEEPER_PREFIX", ctx, "prefix",
                       args._etcd_prefix_default)  # fmt: skip
    for flag, env, field in (
        ("etcd_ca", "SWARMKEEPER_ETCD_CA", "ca"),
        ("etcd_cert", "SWARMKEEPER_ETCD_CERT", "cert"),
        ("etcd_key", "SWARMKEEPER_ETCD_KEY", "key"),
    ):
        v = pick(getattr(args, flag), env, ctx, field)
        setattr(args, flag, Path(v) if v is not None else None)
    args.etcd_user = pick(args.etcd_user, "SWARMKEEPER_ETCD_USER", ctx, "user")


def prefix_of(args: argparse.Namespace) -> str:
    from reconciler import keys

    try:
        return keys.norm(args.prefix or keys.DEFAULT_PREFIX)
    except ValueError as e:
        raise UsageError(str(e)) from None


def endpoints_of(args: argparse.Namespace) -> list[str]:
    eps = [e.strip() for e in str(args.etcd).split(",") if e.strip()]
    if not eps:
        raise UsageError("--etcd needs at least one HOST:PORT")
    return eps


async def connect(args: argparse.Namespace) -> Etcd:
    return await open_etcd(
        endpoints_of(args),
        ca=args.etcd_ca,
        cert=args.etcd_cert,
        key=args.etcd_key,
        user=args.etcd_user,
        timeout=args.etcd_timeout,
    )


async def open_etcd(
    endpoints: Sequence[str],
    *,
    ca: Path | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    user: str | None = None,
    timeout: float = 3.0,  # noqa: ASYNC109 - the per-request timeout etcd is opened with
) -> Etcd:
    """Connect with TLS when any of ca/cert/key is given and auth when ``user`` is."""
    from reconciler.etcd.client import Etcd, TLSConfig

    tls = TLSConfig(ca=ca, cert=cert, key=key) if (ca or cert or key) else None
    password = os.environ.get("SWARMKEEPER_ETCD_PASSWORD")
    if user and password is None:
        raise UsageError("--etcd-user needs $SWARMKEEPER_ETCD_PASSWORD")
    return await Etcd.connect(
        list(endpoints), tls=tls, user=user, password=password, timeout=timeout
    )


def run_with_etcd(args: argparse.Namespace, body: Callable[[Etcd], Awaitable[T]]) -> T:
    """Connect, run ``body``, close: the whole life of a one-shot command."""

    async def main() -> T:
        etcd = await connect(args)
        try:
            return await body(etcd)
        finally:
            await etcd.close()

    return asyncio.run(main())


def operator() -> str:
    """Who is acting, for the records operator commands write."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def short(rev: str) -> str:
    """A commit as a table shows it: 8 hex digits, or the value as it is if not a sha."""
    if len(rev) >= 12 and all(c in "0123456789abcdef" for c in rev):
        return rev[:8]
    return rev or "-"
