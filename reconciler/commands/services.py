"""``swarmkeeper services``: list the services nodes have registered in etcd right now.

Reads ``<prefix>/services/<name>/<node>`` (written by each agent while the service's health
check passes) and prints a table, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from reconciler import keys
from reconciler.commands._etcd import add_etcd_options, prefix_of, run_with_etcd
from reconciler.commands._output import print_json

if TYPE_CHECKING:
    from reconciler.etcd.client import Etcd

NAME = "services"
HELP = "list the services registered in etcd (service, node, address:port, since)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_etcd_options(p)  # --etcd, --prefix, TLS and auth, like every operator command
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


def run(args: argparse.Namespace) -> int:
    prefix = prefix_of(args)

    async def body(etcd: Etcd) -> int:
        kvs, _ = await etcd.get_prefix(keys.services_prefix(prefix))
        rows = parse_entries(prefix, [(kv.key, kv.value) for kv in kvs])
        if args.json:
            items = [{k: v for k, v in r.items() if k != "key"} for r in rows]
            print_json("ServiceList", {"prefix": prefix, "items": items}, indent=2)
        elif rows:
            print(format_table(rows))
        else:
            print(f"no services registered under {keys.services_prefix(prefix)}")
        return 0

    return run_with_etcd(args, body)
