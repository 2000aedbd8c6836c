"""``swarmkeeper status``: where every node stands, read from etcd.

One row per node that has a status or an alive key: role, state, applied vs desired
revision, whether its heartbeat lease is alive and how long ago its last keepalive landed,
how old its last report is, and its error. The state shown is the truth derived from all of
that (``_view``: a dead node is ``dead``, one on an older revision ``behind``), and an
applying node's progress follows it. A header line gives the desired revision and the rollout
(halted, the failed revision while it is still the desired one, slots in use); the last line
counts nodes per state. ``--json`` prints the same as one ``Status`` document; ``--watch``
redraws on every change under the prefix, and every second so ages keep counting.

Exit status: 0 when every node is alive and converged on the desired revision, 3 when not
(behind, applying, halted, degraded, rejected, paused, dead, or no node at all), 1 bad input,
4 etcd unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys
from typing import TYPE_CHECKING, Any

from reconciler.commands._etcd import add_etcd_options, prefix_of, run_with_etcd, short
from reconciler.commands._output import ExitCode, Painter, document, painter, table
from reconciler.commands._view import (
    Shown,
    all_converged,
    count_line,
    counts,
    failure_is_current,
    shown_state,
)

if TYPE_CHECKING:
    from reconciler.etcd.client import KV, Etcd

NAME = "status"
HELP = "show every node's state, applied vs desired revision, heartbeat and error"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_etcd_options(p)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--watch", action="store_true",
                   help="redraw on every change and every second (Ctrl-C ends)")  # fmt: skip


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
                "reported": "",
                "progress": "",
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
                reported=st.state.value,
                progress=st.progress,
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
    for row in nodes.values():
        row["state"] = shown_state(row, desired).value
    rollout: dict[str, Any] = {"halted": None, "failed": None, "failed_current": False,
                               "slots": []}  # fmt: skip
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
    rollout["failed_current"] = failure_is_current(rollout["failed"], desired)
    rows = sorted(nodes.values(), key=lambda r: (r["role"] != "manager", r["node"]))
    states = [Shown(r["state"]) for r in rows]
    return {
        "prefix": prefix,
        "desired": desired,
        "rollout": rollout,
        "nodes": rows,
        "counts": counts(states),
        "converged": all_converged(states),
    }


def exit_code(snap: dict[str, Any]) -> int:
    return ExitCode.OK if snap["converged"] else ExitCode.NOT_CONVERGED


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


def rollout_header(snap: dict[str, Any]) -> str:
    """``desired …`` plus the rollout's halts and slots, for the first line of the table."""
    desired = snap["desired"]
    head = f"desired {short(desired) if desired else '(none published)'}"
    ro = snap["rollout"]
    if ro["failed"] is not None and ro.get("failed_current"):
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
    return head


def format_table(snap: dict[str, Any], paint: Painter | None = None) -> str:
    paint = paint or Painter(False)
    desired = snap["desired"]
    lines = [rollout_header(snap)]
    cols = ["NODE", "ROLE", "STATE", "APPLIED", "DESIRED", "ALIVE", "HEARTBEAT", "REPORTED",
            "SWARM", "ERROR"]  # fmt: skip
    rows = [cols]
    for r in snap["nodes"]:
        state = r["state"]
        text = state
        if r["progress"] and state == "applying":
            text += f" {r['progress']}"
        if r["paused"] and state != "paused":
            text += " (pause set)"
        if r["rollout"]:
            text += f" ({r['rollout']})"
        behind = r["revision"] != desired and bool(desired)
        applied = short(r["revision"]) + (" *" if behind else "")
        rows.append(
            [
                r["node"],
                r["role"] or "-",
                paint.state(text, state),
                applied,
                short(r["desired"]),
                "yes" if r["alive"] else paint("NO", "red"),
                _age(r["heartbeat_age"]),
                _age(r["reported_age"]) + (" ago" if r["reported_age"] is not None else ""),
                _swarm(r.get("swarm") or {}),
                (r["error"] or "").splitlines()[0][:80] if r["error"] else "",
            ]
        )
    lines.extend(table(rows))
    if not snap["nodes"]:
        lines.append(f"(no node has reported under {snap['prefix']}/nodes/)")
    else:
        states = [Shown(r["state"]) for r in snap["nodes"]]
        behind = desired and any(r["revision"] != desired for r in snap["nodes"])
        lines.append(count_line(desired, states)
                     + ("   (* = not on the desired revision)" if behind else ""))  # fmt: skip
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    prefix = prefix_of(args)
    paint = painter(args)
    last: dict[str, Any] = {}

    async def body(etcd: Etcd) -> int:
        kvs, rev = await etcd.get_prefix(prefix + "/")
        show(await snapshot(etcd, prefix, kvs))
        if not args.watch:
            return exit_code(last)
        from reconciler.etcd.client import Resynced, WatchEvent
        from reconciler.etcd.watch import fold

        state = {kv.key: kv for kv in kvs}
        queue: asyncio.Queue[WatchEvent | Resynced] = asyncio.Queue()

        async def pump() -> None:
            async for item in etcd.watch_prefix(prefix + "/", start_revision=rev + 1):
                queue.put_nowait(item)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(pump(), name="status-watch")
            while True:
                items: list[WatchEvent | Resynced] = []
                try:  # a change, or a second gone by: ages must keep counting either way
                    items.append(await asyncio.wait_for(queue.get(), timeout=1.0))
                    await asyncio.sleep(0.1)  # a rollout writes in bursts: one frame a burst
                except TimeoutError:
                    pass
                while not queue.empty():
                    items.append(queue.get_nowait())
                for item in items:
                    fold(state, item)
                snap = await snapshot(etcd, prefix, sorted(state.values(), key=lambda k: k.key))
                if args.json and not items:
                    continue  # a JSON frame only when something changed
                show(snap)
        return exit_code(last)

    def show(snap: dict[str, Any]) -> None:
        last.clear()
        last.update(snap)
        if args.json:
            print(json.dumps(document("Status", snap), sort_keys=True), flush=True)
            return
        if args.watch and sys.stdout.isatty():
            sys.stdout.write("\x1b[H\x1b[2J")  # clear the screen between frames
        elif args.watch:
            print(f"--- {dt.datetime.now(dt.UTC).strftime('%H:%M:%S')}")
        print(format_table(snap, paint), flush=True)

    try:
        return run_with_etcd(args, body)
    except KeyboardInterrupt:
        return exit_code(last) if last else ExitCode.ERROR
