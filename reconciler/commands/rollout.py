"""``swarmkeeper rollout status|halt|resume``: look at and steer the rollout of a revision.

- ``status``: the desired revision, who holds an update slot, whether the rollout is halted
  (by an operator, or because a node rolled the desired revision back) and how many nodes run
  it; exits like ``swarmkeeper status`` (0 all converged, 3 not). ``--wait`` is
  ``swarmkeeper wait``.
- ``halt [--reason]``: write ``<prefix>/rollout/halted``; no node starts an update until
  resumed (nodes mid-update finish).
- ``resume``: delete ``halted`` and ``failed``, so nodes waiting on the desired revision
  take their slots again (publishing a new revision also ends a failed-revision halt).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from reconciler.commands._etcd import (
    add_etcd_options,
    operator,
    prefix_of,
    run_with_etcd,
    short,
)
from reconciler.commands._output import print_json, wants_json
from reconciler.commands.wait import parse_duration

if TYPE_CHECKING:
    from reconciler.etcd.client import Etcd

NAME = "rollout"
HELP = "rollout status | halt | resume"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    st = sub.add_parser("status", help="desired revision, slots in use, halt/failure, progress")
    st.add_argument("--json", action="store_true", help="print one JSON document")
    st.add_argument("--wait", action="store_true",
                    help="block until every node converged (as `swarmkeeper wait`)")  # fmt: skip
    st.add_argument("--timeout", default="10m", type=parse_duration, metavar="DURATION",
                    help="with --wait: give up after this long (default 10m)")  # fmt: skip
    add_etcd_options(st)
    h = sub.add_parser("halt", help="stop nodes from starting updates")
    h.add_argument("--reason", default="", help="why, shown by status")
    h.add_argument("--json", action="store_true", help="print one JSON document")
    add_etcd_options(h)
    r = sub.add_parser("resume", help="clear a halt or a failed revision")
    r.add_argument("--json", action="store_true", help="print one JSON document")
    add_etcd_options(r)


def summary(snap: dict[str, Any]) -> str:
    from reconciler.commands.status import _as_dict

    ro = snap["rollout"]
    desired = snap["desired"]
    lines = [f"desired revision: {desired or '(none published)'}"]
    if ro["failed"] is not None and ro.get("failed_current"):
        f = _as_dict(ro["failed"])
        lines.append(
            f"HALTED: revision {short(str(f.get('revision', '?')))} failed on "
            f"{f.get('node', '?')} at {f.get('at', '?')}: {f.get('error', '')}"
        )
    if ro["halted"] is not None:
        h = _as_dict(ro["halted"])
        lines.append(
            f"HALTED by {h.get('by', '?')} at {h.get('at', '?')}"
            + (f": {h['reason']}" if h.get("reason") else "")
        )
    if not ro.get("failed_current") and ro["halted"] is None:
        lines.append("rollout: running")
    for s in ro["slots"]:
        lines.append(
            f"updating: {s.get('node', '?')} ({s['role']} slot {s['index']}) to "
            f"{short(str(s.get('revision', '?')))} since {s.get('since', '?')}"
        )
    nodes = snap["nodes"]
    on = [r["node"] for r in nodes if r["state"] == "converged"]
    behind = [f"{r['node']} ({r['state']})" for r in nodes if r["node"] not in on]
    lines.append(
        f"converged on the desired revision: {len(on)}/{len(nodes)}"
        + (f"; not yet: {', '.join(behind)}" if behind else "")
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from reconciler import keys
    from reconciler.status import utcnow

    prefix = prefix_of(args)

    async def body(etcd: Etcd) -> int:
        if args.action == "halt":
            record = {"by": operator(), "at": utcnow(), "reason": args.reason}
            await etcd.put(keys.rollout_halted(prefix), json.dumps(record))
            if wants_json(args):
                print_json("RolloutHalt", {"prefix": prefix, "halted": record})
            else:
                print("rollout halted: no node starts an update until "
                      "`swarmkeeper rollout resume`")  # fmt: skip
            return 0
        if args.action == "resume":
            n = await etcd.delete(keys.rollout_halted(prefix))
            m = await etcd.delete(keys.rollout_failed(prefix))
            if wants_json(args):
                print_json("RolloutResume", {"prefix": prefix, "was_halted": bool(n or m)})
            else:
                print("rollout resumed" + ("" if n or m else " (it was not halted)"))
            return 0
        from reconciler.commands.status import exit_code, snapshot

        kvs, _ = await etcd.get_prefix(prefix + "/")
        snap = await snapshot(etcd, prefix, kvs)
        if args.json:
            print_json("RolloutStatus", {k: snap[k] for k in
                                         ("prefix", "desired", "rollout", "nodes", "counts",
                                          "converged")})  # fmt: skip
        else:
            print(summary(snap))
        return exit_code(snap)

    if args.action == "status" and args.wait:
        from reconciler.commands.wait import wait_for

        return wait_for(args, None, args.timeout)
    return run_with_etcd(args, body)
