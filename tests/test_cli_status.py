"""``status`` tells the truth and exits 0/3; ``wait`` blocks until converged, fails fast, or
times out naming the nodes behind. Pure rules first, then the commands against real etcd."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler import keys
from reconciler.commands._view import Shown, all_converged, count_line, shown_state
from reconciler.commands.wait import assess, parse_duration
from reconciler.status import NodeState
from tests.clihelp import ROOT, LiveNode, check_schema, cli
from tests.fixtures.etcd import EtcdServer

P = "/swarmkeeper"
A, B = "a" * 40, "b" * 40


def row(**kw: Any) -> dict[str, Any]:
    base = {"node": "n", "reported": "converged", "alive": True, "revision": A, "desired": A,
            "units": {}, "progress": ""}  # fmt: skip
    return {**base, **kw}


SHOWN = [
    ("converged on the desired revision", row(), A, Shown.CONVERGED),
    ("converged but dead", row(alive=False), A, Shown.DEAD),
    ("degraded and dead is dead", row(alive=False, reported="degraded"), A, Shown.DEAD),
    ("done on an older revision", row(revision=B), A, Shown.BEHIND),
    ("a unit failed", row(units={"a.service": "failed"}), A, Shown.DEGRADED),
    ("an inactive oneshot is fine", row(units={"a.service": "inactive"}), A, Shown.CONVERGED),
    ("nothing published, nothing applied", row(revision="", desired=""), "", Shown.IDLE),
    ("agent says idle", row(reported="idle", revision="", desired=""), "", Shown.IDLE),
    ("published but nothing applied yet", row(revision="", desired=A), A, Shown.BEHIND),
    ("following the branch head", row(revision=B, desired=B), "", Shown.CONVERGED),
    ("applying", row(reported="applying", progress="3/8 restart a.service"), A, Shown.APPLYING),
    ("rejected", row(reported="rejected"), A, Shown.REJECTED),
    ("paused", row(reported="paused"), A, Shown.PAUSED),
]


@pytest.mark.parametrize(("why", "r", "desired", "want"), SHOWN, ids=[c[0] for c in SHOWN])
def test_shown_state(why: str, r: dict[str, Any], desired: str, want: Shown) -> None:
    assert shown_state(r, desired) is want


@given(st.lists(st.sampled_from(list(Shown)), max_size=6))
def test_converged_only_when_every_node_is(states: list[Shown]) -> None:
    assert all_converged(states) == (bool(states) and set(states) == {Shown.CONVERGED})
    line = count_line(A, states)
    assert sum(int(part.split()[0]) for part in line.split("  (")[0].split(", ") if part) == \
        len(states)  # fmt: skip


@pytest.mark.parametrize(("text", "seconds"),
                         [("90", 90), ("90s", 90), ("10m", 600), ("1h30m", 5400), ("1m30s", 90),
                          ("0.5s", 0.5)])  # fmt: skip
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "ten", "10x", "m"])
def test_parse_duration_refuses(bad: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="is not a duration"):
        parse_duration(bad)


def test_assess_names_nodes_behind_and_fails_fast() -> None:
    snap: dict[str, Any] = {
        "desired": A,
        "rollout": {"halted": None, "failed": None, "failed_current": False, "slots": []},
        "nodes": [row(node="m1", state="converged"),
                  row(node="w1", state="applying", progress="2/5 start a.service")],
    }  # fmt: skip
    p = assess(snap, A)
    assert not p.done and not p.failed
    assert p.line == "aaaaaaaa: 1/2 converged; behind: w1 (applying 2/5 start a.service)"
    snap["rollout"].update(failed={"revision": A, "node": "w1", "error": "boom"},
                           failed_current=True)  # fmt: skip
    assert assess(snap, A).failed == "rollout of aaaaaaaa failed on w1: boom"


@pytest.fixture
def live(etcd_server: EtcdServer) -> Iterator[LiveNode]:
    n = LiveNode(etcd_server.endpoint)
    try:
        yield n
    finally:
        n.close()


def test_status_exit_codes_and_counts(live: LiveNode) -> None:
    ep = live.ep
    r = cli("status", ep=ep)
    assert r.returncode == 3 and "(no node has reported under /swarmkeeper/nodes/)" in r.stdout
    live.alive("m1")
    live.report("m1", NodeState.IDLE, "", "")
    r = cli("status", ep=ep)
    assert r.returncode == 3, r.stdout  # nothing published: idle is not converged
    assert r.stdout.splitlines()[-1] == "1 idle  (no revision published)"
    live.put(keys.desired_revision(P), A)
    live.report("m1", NodeState.CONVERGED, A, A, units={"a.service": "active"})
    live.alive("m2")
    live.report("m2", NodeState.APPLYING, B, A, progress="3/8 restart web.service")
    r = cli("status", ep=ep)
    assert r.returncode == 3
    m2 = next(ln for ln in r.stdout.splitlines() if ln.startswith("m2 "))
    assert "applying 3/8 restart web.service" in m2
    assert r.stdout.splitlines()[-1].startswith(
        "1 converged, 1 applying  (1/2 converged on the desired revision)"
    )
    live.report("m2", NodeState.CONVERGED, A, A)
    r = cli("status", ep=ep)
    assert r.returncode == 0, r.stdout
    assert r.stdout.splitlines()[-1].startswith("2 converged  (2/2 converged")
    # colour only when asked for off a terminal; NO_COLOR does not stop an explicit always
    assert "\x1b[" not in r.stdout
    coloured = cli("status", "--color", "always", ep=ep, env={"NO_COLOR": "1"}).stdout
    assert "\x1b[32mconverged\x1b[0m" in coloured


def test_failed_marker_shows_only_for_its_revision(live: LiveNode) -> None:
    ep = live.ep
    live.put(keys.desired_revision(P), A)
    live.alive("m1")
    live.report("m1", NodeState.CONVERGED, A, A)
    failed = {"revision": B, "node": "m1", "error": "b.service failed", "at": "t"}
    live.put(keys.rollout_failed(P), json.dumps(failed))  # left over from revision B
    r = cli("status", ep=ep)
    assert r.returncode == 0 and "HALTED" not in r.stdout
    r = cli("rollout", "status", ep=ep)
    assert r.returncode == 0 and "rollout: running" in r.stdout and "HALTED" not in r.stdout
    doc = check_schema(cli("rollout", "status", "--json", ep=ep).stdout, "RolloutStatus")
    assert doc["rollout"]["failed"]["revision"] == B and doc["rollout"]["failed_current"] is False
    live.put(keys.rollout_failed(P), json.dumps({**failed, "revision": A}))
    r = cli("status", ep=ep)
    assert "ROLLOUT HALTED: aaaaaaaa failed on m1" in r.stdout.splitlines()[0]


def _wait(ep: str, *args: str) -> subprocess.Popen[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMKEEPER_")}
    env.update(PYTHONPATH=str(ROOT), SWARMKEEPER_ETCD=ep,
               SWARMKEEPER_CONFIG="/nonexistent/swarmkeeper.yaml")  # fmt: skip
    return subprocess.Popen([sys.executable, "-m", "reconciler", "wait", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def test_wait_returns_once_every_node_converged(live: LiveNode) -> None:
    live.put(keys.desired_revision(P), A)
    live.alive("m1")
    live.report("m1", NodeState.APPLYING, B, A, progress="1/2 start a.service")
    proc = _wait(live.ep, "--timeout", "30s", "--json")
    assert proc.stderr is not None
    first = proc.stderr.readline()  # the progress line names the node behind and why
    assert first.strip() == "aaaaaaaa: 0/1 converged; behind: m1 (applying 1/2 start a.service)"
    live.report("m1", NodeState.CONVERGED, A, A)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    doc = check_schema(out, "WaitResult")
    assert doc["result"] == "converged" and doc["revision"] == A and doc["behind"] == []


def test_wait_fails_fast_on_a_failed_rollout(live: LiveNode) -> None:
    live.put(keys.desired_revision(P), A)
    live.alive("m1")
    live.report("m1", NodeState.DEGRADED, B, A, error="a.service failed")
    t = time.monotonic()
    proc = _wait(live.ep, "--revision", A[:8], "--timeout", "60s")
    time.sleep(1.0)
    live.put(keys.rollout_failed(P), json.dumps({"revision": A, "node": "m1",
                                                "error": "a.service failed"}))  # fmt: skip
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert "rollout of aaaaaaaa failed on m1: a.service failed" in err
    assert time.monotonic() - t < 30  # not the 60 s timeout


def test_wait_times_out_naming_the_nodes_behind(live: LiveNode) -> None:
    live.put(keys.desired_revision(P), A)
    live.alive("m1")
    live.report("m1", NodeState.CONVERGED, A, A)
    live.report("w1", NodeState.CONVERGED, B, B, role="worker")  # no alive key: dead
    r = cli("wait", "--timeout", "2s", ep=live.ep)
    assert r.returncode == 5
    assert r.stderr.splitlines()[-1] == "timed out after 2s waiting for aaaaaaaa; behind: w1 (dead)"
    r = cli("wait", "--revision", "cafe", ep=live.ep)
    assert r.returncode == 1 and "not the desired revision" in r.stderr


def test_watch_redraws_every_second_without_changes(live: LiveNode) -> None:
    live.put(keys.desired_revision(P), A)
    live.alive("m1")
    live.report("m1", NodeState.CONVERGED, A, A)
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SWARMKEEPER_")}
    env.update(PYTHONPATH=str(ROOT), SWARMKEEPER_ETCD=live.ep,
               SWARMKEEPER_CONFIG="/nonexistent/swarmkeeper.yaml")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "reconciler", "status", "--watch"],
                            stdout=subprocess.PIPE, text=True, env=env)  # fmt: skip
    ages = []
    try:
        assert proc.stdout is not None
        t = time.monotonic()
        while len(ages) < 4:
            line = proc.stdout.readline()
            if line.startswith("m1 "):
                ages.append(line.split()[7])  # REPORTED: "3s" of "3s ago"
        took = time.monotonic() - t
    finally:
        proc.terminate()
        proc.wait(10)
    # nothing changed in etcd, yet four frames came about a second apart and the age counted
    assert 2.0 <= took <= 8.0, took
    assert int(ages[-1].rstrip("s")) > int(ages[0].rstrip("s")), ages


def test_rollout_status_wait_is_wait(live: LiveNode) -> None:
    live.put(keys.desired_revision(P), A)
    live.alive("m1")
    live.report("m1", NodeState.CONVERGED, A, A)
    r = cli("rollout", "status", "--wait", "--timeout", "5s", ep=live.ep)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("aaaaaaaa: all 1 node(s) converged in ")
    live.report("m1", NodeState.CONVERGED, B, B)
    r = cli("rollout", "status", "--wait", "--timeout", "1s", ep=live.ep)
    assert r.returncode == 5 and "behind: m1 (behind)" in r.stderr


@pytest.mark.parametrize("args", ["status --watch | head -1", "status --json | head -c 5",
                                  "status | head -1", "wait --timeout 2s 2>&1 | head -1"])  # fmt: skip
def test_broken_pipes_end_quietly(live: LiveNode, args: str) -> None:
    import os

    live.alive("m1")
    live.report("m1", NodeState.CONVERGED, A, A)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(ROOT), "SWARMKEEPER_ETCD": live.ep,
           "SWARMKEEPER_CONFIG": "/nonexistent"}  # fmt: skip
    r = subprocess.run(["bash", "-o", "pipefail", "-c", f"{sys.executable} -m reconciler {args}"],
                       capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert r.stderr == "" and r.stdout
    assert r.returncode in (0, 3, 5, 141)  # the command's own verdict, or the pipe's end
