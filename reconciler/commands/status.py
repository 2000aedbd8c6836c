"""``swarmkeeper status``: where every node stands, read from etcd.

One row per node that has a status or an alive key: role, state, applied vs desired
revision, whether its heartbeat lease is alive and how long ago its last keepalive landed,
how old its last report is, and its error. A header line gives the desired revision and the
rollout (halted, failed revision, slots in use). ``--json`` prints the same as one object;
``--watch`` redraws on every change under the prefix (no polling).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from typing import TYPE_CHECKING, Any

from reconciler.commands._etcd import add_etcd_options, prefix_of, run_with_etcd, short

if TYPE_CHECKING:
    from reconciler.etcd.client import KV, Etcd

NAME = "status"
HELP = "show every node's state, applied vs desired revision, heartbeat and error"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_etcd_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--watch", action="store_true", help="redraw on every change (Ctrl-C ends)")


async def snapshot(etcd: Etcd, prefix: str, kvs: list[KV]) -> dict[str, Any]:
    """The whole picture as plain data (what --json prints and the table shows)."""
    from reconciler import keys
    from reconciler.status import NodeStatus

    by_key = {kv.key: kv for kv in kvs}
    now = dt.datetime.now(dt.UTC)
    desired_kv = by_key.get(keys.desired_revision(prefix).encode())
    desired = desired_kv.value.decode().strip() if desired_kv else ""
    nodes: dict[str, dict[str, Any]] = {}
    heartbeats: dict[str, int] = {}  # node -> lease of its alive key
    for kv in kvs:
        nk = keys.split_node_key(prefix, kv.key)
        if nk is None:
            continue
        name, leaf = nk
        row = nodes.setdefault(
            name,
            {
                "node": name,
                "role": "",
                "state": "unknown",
                "revision": "",
                "desired": "",
                "error": "",
                "alive": False,
                "heartbeat_age": None,
                "reported_age": None,
                "paused": False,
                "rollout": "",
                "units": {},
            },
        )
        if leaf == "status":
            try:
                st = NodeStatus.from_json(kv.value)
            except ValueError as e:
                row["error"] = f"unreadable status: {e}"
                continue
            row.update(
                role=st.role,
                state=st.state.value,
                revision=st.revision,
                desired=st.desired,
                error=st.error,
                rollout=st.rollout,
                units=dict(st.units),
                problems=list(st.problems),
                swarm=dict(st.swarm),
            )
            age = st.age(now)
            row["reported_age"] = round(age, 1) if age is not None else None
        elif leaf == "alive" and kv.lease:
            heartbeats[name] = kv.lease
        elif leaf == "pause":
            row["paused"] = True
    ttls = await asyncio.gather(*(etcd.lease_time_to_live(x) for x in heartbeats.values()))
    for name, ttl in zip(heartbeats, ttls, strict=True):
        if ttl is not None:  # the lease still exists: the agent keeps it alive
            nodes[name]["alive"] = True
            nodes[name]["heartbeat_age"] = max(0, ttl[1] - ttl[0])
    rollout: dict[str, Any] = {"halted": None, "failed": None, "slots": []}
    for key_fn, field in ((keys.rollout_halted, "halted"), (keys.rollout_failed, "failed")):
        marker = by_key.get(key_fn(prefix).encode())
        if marker is not None:
            rollout[field] = _json_or_text(marker.value)
    for kv in kvs:
        sk = keys.split_slot_key(prefix, kv.key)
        if sk is not None:
            rollout["slots"].append(
                {"role": sk[0].value, "index": sk[1], **_as_dict(_json_or_text(kv.value))}
            )
    rows = sorted(nodes.values(), key=lambda r: (r["role"] != "manager", r["node"]))
    return {"prefix": prefix, "desired": desired, "rollout": rollout, "nodes": rows}


def _json_or_text(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")


def _as_dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {"value": v}


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h" if s < 172800 else f"{s // 86400}d"


def _swarm(m: dict[str, Any]) -> str:
    """Membership at a glance: ``manager* 3/3`` (leader, managers reachable/known)."""
    if not m:
        return "-"
    if m.get("state") != "member":
        return str(m.get("state", "?"))
    text = str(m.get("role") or "?") + ("*" if m.get("leader") else "")
    if m.get("managers"):
        text += f" {m.get('managers_reachable', 0)}/{m['managers']}"
    return text


def format_table(snap: dict[str, Any]) -> str:
    lines = []
    desired = snap["desired"]
    head = f"desired {short(desired) if desired else '(none published)'}"
    ro = snap["rollout"]
    if ro["failed"] is not None:
        f = _as_dict(ro["failed"])
        head += (
            f"  ROLLOUT HALTED: {short(str(f.get('revision', '?')))} failed on "
            f"{f.get('node', '?')}: {f.get('error', '')}"
        )
    if ro["halted"] is not None:
        h = _as_dict(ro["halted"])
        head += f"  ROLLOUT HALTED by {h.get('by', '?')}: {h.get('reason', '')}".rstrip(": ")
    if ro["slots"]:
        head += "  updating: " + ", ".join(str(s.get("node", "?")) for s in ro["slots"])
    lines.append(head)
    cols = [
        "NODE",
        "ROLE",
        "STATE",
        "APPLIED",
        "DESIRED",
        "ALIVE",
        "HEARTBEAT",
        "REPORTED",
        "SWARM",
        "ERROR",
    ]
    table = [cols]
    for r in snap["nodes"]:
        state = r["state"]
        if r["paused"] and state != "paused":
            state += " (pause set)"
        if r["rollout"]:
            state += f" ({r['rollout']})"
        behind = r["revision"] != desired and bool(desired)
        applied = short(r["revision"]) + (" *" if behind else "")
        table.append(
            [
                r["node"],
                r["role"] or "-",
                state,
                applied,
                short(r["desired"]),
                "yes" if r["alive"] else "NO",
                _age(r["heartbeat_age"]),
                _age(r["reported_age"]) + (" ago" if r["reported_age"] is not None else ""),
                _swarm(r.get("swarm") or {}),
                (r["error"] or "").splitlines()[0][:80] if r["error"] else "",
            ]
        )
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]
    for row in table:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    if not snap["nodes"]:
        lines.append(f"(no node has reported under {snap['prefix']}/nodes/)")
    else:
        on = sum(1 for r in snap["nodes"] if r["revision"] == desired and r["state"] == "converged")
        lines.append(
            f"{on}/{len(snap['nodes'])} converged on the desired revision"
            + ("   (* = not on the desired revision)" if desired else "")
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    prefix = prefix_of(args)

    async def body(etcd: Etcd) -> int:
        kvs, rev = await etcd.get_prefix(prefix + "/")
        show(await snapshot(etcd, prefix, kvs))
        if not args.watch:
            return 0
        from reconciler.etcd.client import Resynced, WatchEvent

        state = {kv.key: kv for kv in kvs}
        queue: asyncio.Queue[WatchEvent | Resynced] = asyncio.Queue()

        async def pump() -> None:
            async for item in etcd.watch_prefix(prefix + "/", start_revision=rev + 1):
                queue.put_nowait(item)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(pump(), name="status-watch")
            while True:
                items = [await queue.get()]
                await asyncio.sleep(0.1)  # a rollout writes in bursts: one frame per burst
                while not queue.empty():
                    items.append(queue.get_nowait())
                for item in items:
                    if isinstance(item, Resynced):
                        state = {kv.key: kv for kv in item.kvs}
                    elif item.kind == "put":
                        state[item.kv.key] = item.kv
                    else:
                        state.pop(item.kv.key, None)
                show(await snapshot(etcd, prefix, sorted(state.values(), key=lambda k: k.key)))
        return 0

    def show(snap: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(snap, sort_keys=True), flush=True)
            return
        if args.watch and sys.stdout.isatty():
            sys.stdout.write("\x1b[H\x1b[2J")  # clear the screen between frames
        elif args.watch:
            print(f"--- {dt.datetime.now(dt.UTC).strftime('%H:%M:%S')}")
        print(format_table(snap), flush=True)

    try:
        return run_with_etcd(args, body)
    except KeyboardInterrupt:
        return 0
