"""``swarmkeeper wait [--revision REV] [--timeout 10m]``: block until a rollout is done.

Like ``kubectl rollout status``: watches the prefix and returns once every node is alive and
``converged`` on the revision (default: the desired revision when the command starts; a short
sha works). A progress line (on stderr, rewritten in place on a terminal) says how many nodes
are done and names the ones behind with their state. It fails fast instead of waiting out the
timeout when the rollout cannot finish: the revision failed on a node (``rollout/failed``), an
operator halted the rollout, or a node rejected the revision.

Exit status: 0 converged, 3 failed/halted/rejected, 5 timed out (naming the nodes behind),
4 etcd unavailable, 1 bad input. ``--json`` prints one ``WaitResult`` document at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from reconciler.commands._etcd import add_etcd_options, prefix_of, run_with_etcd, short
from reconciler.commands._output import ExitCode, print_json, wants_json
from reconciler.errors import UsageError

if TYPE_CHECKING:
    from reconciler.etcd.client import Etcd

NAME = "wait"
HELP = "block until every node converged on a revision (exit 0), or it failed (3) or timed out (5)"

_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s?)?")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``1h30m``, ``1m30s`` -> seconds."""
    m = _DURATION.fullmatch(text.strip())
    if not text.strip() or m is None or not any(m.groups()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration: write e.g. 90s, 10m, 1h")
    h, mi, s = m.groups()
    return int(h or 0) * 3600 + int(mi or 0) * 60 + float(s or 0)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--revision", metavar="REV",
                   help="the commit to wait for (default: the desired revision now)")  # fmt: skip
    p.add_argument("--timeout", default="10m", type=parse_duration, metavar="DURATION",
                   help="give up after this long, e.g. 90s, 10m, 1h (default 10m)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON document at the end")
    add_etcd_options(p)


@dataclass(frozen=True, slots=True)
class Progress:
    """Where a wait stands after one look at the cluster. Pure."""

    done: bool
    failed: str  # why it cannot finish ("" while it still can)
    line: str  # the progress line
    behind: tuple[str, ...]  # "node (state)" of each node not converged


def assess(snap: dict[str, Any], revision: str) -> Progress:
    desired = snap["desired"]
    nodes = snap["nodes"]
    ro = snap["rollout"]
    target = short(revision)
    if desired != revision:
        return Progress(False, "", f"{target}: not the desired revision yet "
                        f"(desired is {short(desired) if desired else 'none'})", ())  # fmt: skip
    behind = []
    for r in nodes:
        if r["state"] == "converged":
            continue
        state = r["state"] + (f" {r['progress']}" if r.get("progress") else "")
        behind.append(f"{r['node']} ({state})")
    failed = ""
    f = ro.get("failed")
    if ro.get("failed_current") and isinstance(f, dict):
        failed = f"rollout of {target} failed on {f.get('node', '?')}: {f.get('error', '')}"
    elif ro.get("halted") is not None:
        h = ro["halted"] if isinstance(ro["halted"], dict) else {}
        failed = f"rollout halted by {h.get('by', '?')}: {h.get('reason', '') or 'no reason'}"
    elif rejected := [r["node"] for r in nodes if r["state"] == "rejected"]:
        failed = f"{', '.join(rejected)} rejected {target} (see `swarmkeeper status`)"
    on = len(nodes) - len(behind)
    line = f"{target}: {on}/{len(nodes)} converged"
    if behind:
        line += "; behind: " + ", ".join(behind)
    return Progress(bool(nodes) and not behind, failed, line, tuple(behind))


def wait_for(args: argparse.Namespace, revision: str | None, timeout: float) -> int:
    """Wait for ``revision`` (None: the desired one) under the prefix; the exit code."""
    from reconciler import keys
    from reconciler.commands.status import snapshot

    prefix = prefix_of(args)
    tty = sys.stderr.isatty()
    started = time.monotonic()
    shown = [""]

    def say(line: str) -> None:
        if line == shown[0]:
            return
        shown[0] = line
        if tty:
            sys.stderr.write("\r\x1b[K" + line[:200])
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    async def body(etcd: Etcd) -> int:
        kvs, rev = await etcd.get_prefix(prefix + "/")
        state = {kv.key: kv for kv in kvs}
        desired_kv = state.get(keys.desired_revision(prefix).encode())
        desired = desired_kv.value.decode().strip() if desired_kv else ""
        target = _resolve(revision, desired)
        from reconciler.etcd.watch import fold

        watch = etcd.watch_prefix(prefix + "/", start_revision=rev + 1)
        pending: asyncio.Task[Any] | None = None
        try:
            while True:
                snap = await snapshot(etcd, prefix, sorted(state.values(), key=lambda k: k.key))
                target = target or snap["desired"]
                prog = assess(snap, target) if target else Progress(
                    False, "", "no revision published yet", ())  # fmt: skip
                say(prog.line)
                elapsed = time.monotonic() - started
                if prog.done or prog.failed or elapsed >= timeout:
                    return finish(snap, target, prog, elapsed, timeout)
                if pending is None:
                    pending = asyncio.ensure_future(anext(watch))
                done, _ = await asyncio.wait({pending}, timeout=min(1.0, timeout - elapsed))
                if not done:
                    continue  # a second went by: redraw the ages, check the deadline
                fold(state, pending.result())
                pending = None
        finally:
            if pending is not None:  # the generator must stop running before it can close
                pending.cancel()
                await asyncio.wait({pending})
            await watch.aclose()  # type: ignore[attr-defined]

    def finish(snap: dict[str, Any], target: str, prog: Progress, elapsed: float,
               limit: float) -> int:  # fmt: skip
        if tty:
            sys.stderr.write("\n")
        if prog.done:
            code, result = ExitCode.OK, "converged"
            msg = f"{short(target)}: all {len(snap['nodes'])} node(s) converged in {elapsed:.0f}s"
        elif prog.failed:
            code, result, msg = ExitCode.NOT_CONVERGED, "failed", prog.failed
        else:
            code, result = ExitCode.TIMEOUT, "timeout"
            msg = (f"timed out after {limit:.0f}s waiting for {short(target) or 'a revision'}"
                   + (f"; behind: {', '.join(prog.behind)}" if prog.behind else ""))  # fmt: skip
        if wants_json(args):
            print_json("WaitResult", {
                "prefix": prefix, "revision": target, "result": result, "message": msg,
                "seconds": round(elapsed, 1), "behind": list(prog.behind),
                "counts": snap["counts"],
            })  # fmt: skip
        else:
            print(msg, file=sys.stdout if code == ExitCode.OK else sys.stderr)
        return int(code)

    return run_with_etcd(args, body)


def _resolve(revision: str | None, desired: str) -> str:
    """A short sha is the desired revision when it is a prefix of it; a full one is itself."""
    if revision is None:
        return desired
    rev = revision.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{4,40}", rev):
        raise UsageError(f"--revision {revision!r}: give a commit sha (4 to 40 hex digits)")
    if desired.startswith(rev):
        return desired
    if len(rev) < 40:
        raise UsageError(f"--revision {revision}: not the desired revision "
                         f"({short(desired) if desired else 'none published'}); give the "
                         "full sha to wait for a revision not published yet")  # fmt: skip
    return rev


def run(args: argparse.Namespace) -> int:
    return wait_for(args, args.revision, args.timeout)
