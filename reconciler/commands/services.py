"""``swarmkeeper services``: list the services nodes have registered in etcd right now.

Reads ``<prefix>/services/<name>/<node>`` (written by each agent while the service's health
check passes) and prints a table, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any

from reconciler import keys

NAME = "services"
HELP = "list the services registered in etcd (service, node, address:port, since)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--etcd",
        default=os.environ.get("SWARMKEEPER_ETCD", "127.0.0.1:2379"),
        help="etcd endpoints HOST:PORT[,...] (default: $SWARMKEEPER_ETCD or 127.0.0.1:2379)",
    )
    p.add_argument(
        "--prefix",
        default=os.environ.get("SWARMKEEPER_PREFIX", "/swarmkeeper"),
        help="the cluster's etcd key prefix (default: /swarmkeeper)",
    )
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def parse_entries(prefix: str, kvs: list[tuple[bytes, bytes]]) -> list[dict[str, Any]]:
    """One row per registration key; a value that is not our JSON still gets a row."""
    base = keys.services_prefix(prefix)
    rows = []
    for raw_key, raw_value in kvs:
        key = raw_key.decode(errors="replace")
        name, _, node = key.removeprefix(base).partition("/")
        try:
            value = json.loads(raw_value)
            if not isinstance(value, dict):
                raise ValueError("not an object")
        except ValueError:
            value = {}
        rows.append(
            {
                "service": name,
                "node": node,
                "address": str(value.get("address", "?")),
                "port": value.get("port"),
                "since": str(value.get("since", "?")),
                "key": key,
            }
        )
    rows.sort(key=lambda r: (r["service"], r["node"]))
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    header = ("SERVICE", "NODE", "ADDRESS", "SINCE")
    lines = [header] + [
        (r["service"], r["node"], f"{r['address']}:{r['port']}", r["since"]) for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join(
        "  ".join(col.ljust(w) for col, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


async def _read(endpoints: list[str], prefix: str) -> list[dict[str, Any]]:
    from reconciler.etcd import Etcd

    async with await Etcd.connect(endpoints) as etcd:
        kvs, _ = await etcd.get_prefix(keys.services_prefix(prefix))
    return parse_entries(prefix, [(kv.key, kv.value) for kv in kvs])


def run(args: argparse.Namespace) -> int:
    from reconciler.errors import UsageError

    endpoints = [e for e in args.etcd.split(",") if e]
    if not endpoints:
        raise UsageError("--etcd needs at least one HOST:PORT")
    try:
        prefix = keys.norm(args.prefix)
    except ValueError as e:
        raise UsageError(str(e)) from e
    rows = asyncio.run(_read(endpoints, prefix))
    if args.json:
        print(json.dumps([{k: v for k, v in r.items() if k != "key"} for r in rows], indent=2))
    elif rows:
        print(format_table(rows))
    else:
        print(f"no services registered under {keys.services_prefix(prefix)}")
    return 0
