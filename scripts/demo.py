"""`make demo`: one sandbox cluster on one machine, from validation to a converged change.

The demo runs ONE cluster, named ``sandbox``: its state is ``STATE`` below (one manager, two
workers, a ``web.service``), committed to a temporary git repository. It is not this
repository's ``state/`` (cluster ``demo``: three managers, etcd members and Vault), which
needs real hosts; the demo says so when it starts.

1. ``swarmkeeper validate`` and ``swarmkeeper render`` of the sandbox's state, for two of its
   nodes (what those nodes will run).
2. A local etcd and three nodes, each a real systemd user manager in its own mount namespace
   and cgroup with its own ``swarmkeeper agent``. It publishes the first revision, commits a
   change to one unit, publishes it, and shows ``swarmkeeper status`` until all three nodes
   converge.

Everything runs on 127.0.0.1 and in temp dirs; Ctrl-C (or the end) tears it all down.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.fixtures.agents import agent_for  # noqa: E402
from tests.fixtures.etcd import etcd_server  # noqa: E402
from tests.fixtures.gitrepo import git, make_state_repo  # noqa: E402
from tests.fixtures.systemd_user import user_manager  # noqa: E402

NODES = {"manager-1": "manager", "worker-1": "worker", "worker-2": "worker"}
WEB = """[Unit]
Description=demo web server ({version})

[Service]
Environment=GREETING={greeting}
ExecStart=/bin/sleep infinity
ExecReload=/bin/true
"""
STATE: dict[str, str | bytes | None] = {
    "state/cluster.yaml": "name: sandbox\nmanagers: 1\nrollout: {max_unavailable: 1}\nvars: {TIER: demo}\n",
    "state/roles/manager.yaml": "units:\n  - web.service\n  - heartbeat.service\n",
    "state/roles/worker.yaml": "units:\n  - web.service\n",
    "state/nodes/manager-1.yaml": "role: manager\nlabels: {zone: a}\n",
    "state/nodes/worker-1.yaml": "role: worker\n",
    "state/nodes/worker-2.yaml": "role: worker\n",
    "units/web.service": WEB.format(version="v1", greeting="hello"),
    "units/heartbeat.service": "[Service]\nExecStart=/bin/sh -c 'while sleep 5; do :; done'\n",
}


def sk(
    *args: str, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reconciler", *args], cwd=REPO, text=True,
                          capture_output=True, check=check, env=env)  # fmt: skip


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 74 - len(text)), flush=True)


def show_status(etcd: str, rev: str, timeout: float = 90) -> None:
    """Print ``swarmkeeper status`` whenever a node's state changes, until all run ``rev``."""
    from reconciler.commands.status import format_table

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        out = sk("status", "--etcd", etcd, "--json", check=False).stdout
        snap = json.loads(out) if out.strip() else {"nodes": []}
        rows = snap["nodes"]
        seen = [(r["node"], r["state"], r["revision"], r["rollout"]) for r in rows]
        done = {r["node"] for r in rows} == set(NODES) and all(
            r["revision"] == rev and r["state"] == "converged" for r in rows
        )
        if seen != last:  # ages alone change every second: show only real changes
            print(format_table(snap), flush=True)
            print("-" * 78)
            last = seen
        if done:
            return
        time.sleep(0.5)
    raise SystemExit(f"the sandbox did not converge on {rev[:12]} within {timeout:.0f}s")


def main() -> None:
    base = Path(tempfile.mkdtemp(prefix="sk-demo-"))
    try:
        with ExitStack() as stack:
            repo = make_state_repo(base / "repo", STATE)
            banner("the cluster of this demo: 'sandbox'")
            print(f"state repo {repo.work} (scripts/demo.py STATE): 1 manager, 2 workers.\n"
                  "This repository's own state/ (cluster 'demo', 3 managers) needs real hosts;\n"
                  "`swarmkeeper validate --repo .` checks it.")  # fmt: skip
            banner("swarmkeeper validate")
            print(sk("validate", "--repo", str(repo.work)).stdout.rstrip())
            for node in ("manager-1", "worker-1"):
                banner(f"swarmkeeper render --node {node}")
                print(sk("render", "--repo", str(repo.work), "--node", node,
                         "--address", "10.0.0.11").stdout.rstrip())  # fmt: skip

            banner("sandbox: etcd and three nodes (systemd user managers)")
            etcd = stack.enter_context(etcd_server())
            agents = []
            for node in NODES:
                um = stack.enter_context(user_manager(base / "um", f"demo-{node}"))
                a = agent_for(um, base / "nodes", node=node, repo=repo.url, etcd=etcd.endpoint)
                stack.callback(a.stop)
                a.start()
                agents.append(a)
                print(
                    f"{node}: systemd --user pid {um.pid}, agent pid {a.proc.pid if a.proc else '?'}"
                )
            print(f"etcd at {etcd.endpoint}, state repo at {repo.url}")

            rev1 = git(repo.work, "rev-parse", "HEAD")
            banner(f"swarmkeeper publish {rev1[:12]}")
            print(
                sk(
                    "publish", "--repo", str(repo.work), "--etcd", etcd.endpoint, rev1
                ).stdout.rstrip()
            )
            show_status(etcd.endpoint, rev1)

            banner("commit a change to web.service")
            rev2 = repo.commit({"units/web.service": WEB.format(version="v2", greeting="bonjour")},
                               "web: say bonjour")  # fmt: skip
            w = agents[1]
            banner(f"swarmkeeper plan on {w.node}: what its agent will do")
            plan = sk("plan", "--repo", repo.url, "--rev", rev2, "--node", w.node, "--scope", "user",
                      "--etcd", etcd.endpoint,
                      "--state-dir", str(w.state_dir), "--root", str(w.root),
                      "--unit-dir", str(w.um.unit_dir), check=False, env=w.env)  # fmt: skip
            print(
                plan.stdout.rstrip() or plan.stderr.rstrip(),
                f"\n(plan exit status {plan.returncode})",
            )
            banner(f"swarmkeeper publish {rev2[:12]}")
            print(
                sk(
                    "publish", "--repo", str(repo.work), "--etcd", etcd.endpoint, rev2
                ).stdout.rstrip()
            )
            t0 = time.monotonic()
            show_status(etcd.endpoint, rev2)
            print(f"all three nodes converged on {rev2[:12]} in {time.monotonic() - t0:.1f} s")

            banner("what systemd runs now")
            for a in agents:
                env = a.um.systemctl("show", "-P", "Environment", "web.service").stdout.strip()
                active = a.um.systemctl("is-active", "web.service").stdout.strip()
                print(f"{a.node:<10} web.service {active:<8} {env}")
            banner("tearing down")
    except KeyboardInterrupt:
        print("\ninterrupted: tearing down")
    finally:
        if not os.environ.get("KEEP"):
            shutil.rmtree(base, ignore_errors=True)
    print("done")


if __name__ == "__main__":
    main()
