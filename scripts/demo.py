"""`make demo`: validate and render this repo's state, then run the whole job on this machine.

1. ``swarmkeeper validate`` and ``swarmkeeper render`` on the repository's own ``state/`` for a
   manager and a worker (what a real node would run).
2. ``swarmkeeper sandbox up``: three managers and two workers (``SANDBOX_MANAGERS``,
   ``SANDBOX_WORKERS``), each a Debian root provisioned by the real Ignition from
   ``swarmkeeper cloudconfig``'s output and booted with ``systemd-nspawn --boot``; the
   generated units form etcd and the swarm and start the agents, which converge.
3. Looks at it from outside: ``etcdctl member list``, ``docker node ls``, ``swarmkeeper status``
   and ``services``; commits a change to the state repo, publishes it and shows status until
   every node converges; kills a manager outright and boots it again.
4. ``swarmkeeper sandbox down`` (``KEEP=1`` keeps the cluster and prints its directory).

Needs root, systemd-container, ignition and the cached node root (``make node-root``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def sk(*args: str, check: bool = True, stream: bool = False, ok: tuple[int, ...] = (0,)) -> str:
    argv = [sys.executable, "-m", "reconciler", *args]
    if stream:  # progress goes to the terminal as it happens
        subprocess.run(argv, cwd=REPO, env=ENV, check=check)
        return ""
    out = subprocess.run(argv, cwd=REPO, env=ENV, text=True, capture_output=True, check=False)
    if check and out.returncode not in ok:
        raise SystemExit(f"swarmkeeper {' '.join(args)} failed:\n{out.stdout}{out.stderr}")
    return out.stdout.rstrip()


def banner(text: str) -> None:
    print(f"\n=== {text} " + "=" * max(0, 74 - len(text)), flush=True)


def show(argv: list[str]) -> None:
    out = subprocess.run(argv, text=True, capture_output=True, env={**ENV, "ETCDCTL_API": "3"})
    print((out.stdout + out.stderr).rstrip(), flush=True)


def wait_converged(etcd: str, rev: str, nodes: int, timeout: float = 180) -> float:
    start, last = time.monotonic(), None
    while time.monotonic() - start < timeout:
        # status exits 3 while some node is not converged
        snap = json.loads(sk("status", "--etcd", etcd, "--json", ok=(0, 3)) or '{"nodes": []}')
        rows = [(r["node"], r["state"], r["revision"]) for r in snap["nodes"]]
        if rows != last:
            print(sk("status", "--etcd", etcd, ok=(0, 3)), flush=True)
            last = rows
        if len(rows) == nodes and all(s == "converged" and v == rev for _, s, v in rows):
            return time.monotonic() - start
        time.sleep(0.5)
    raise SystemExit(f"the sandbox did not converge on {rev[:12]} within {timeout:.0f} s")


def main() -> None:
    banner("validate this repository's state/")
    print(sk("validate", "--repo", "."))
    for node, role in (("manager-1", "manager"), ("worker-7", "worker")):
        banner(f"render --node {node} --role {role}")
        print(sk("render", "--repo", ".", "--node", node, "--role", role, "--address", "10.0.0.11"))

    managers = os.environ.get("SANDBOX_MANAGERS", "3")
    workers = os.environ.get("SANDBOX_WORKERS", "2")
    d = Path(tempfile.mkdtemp(prefix="sk-sandbox-")) / "cluster"
    try:
        banner(f"swarmkeeper sandbox up --managers {managers} --workers {workers} --dir {d}")
        sk("sandbox", "up", "--managers", managers, "--workers", workers, "--dir", str(d),
           stream=True)  # fmt: skip
        doc = json.loads((d / "cluster.json").read_text())
        etcd, m1 = doc["etcd"][0], doc["nodes"][0]["leader_pid"]
        banner("from outside: etcdctl member list (forwarded to 127.0.0.1)")
        show(["etcdctl", f"--endpoints={','.join(doc['etcd'])}", "member", "list", "-w", "table"])
        banner(f"docker node ls on manager-1 (nsenter -t {m1} -a)")
        show(["nsenter", "-t", str(m1), "-a", "docker", "node", "ls"])
        banner("swarmkeeper services (Vault stand-in registered by the agents)")
        print(sk("services", "--etcd", etcd))

        banner("commit a change to the state repo and publish it")
        work = d / "state-work"
        git = ["git", "-C", str(work), "-c", "user.name=demo", "-c", "user.email=demo@localhost"]
        for role in ("manager", "worker"):
            p = work / f"state/roles/{role}.yaml"
            p.write_text(p.read_text().replace("changes here are overwritten", "hello from the demo"))  # fmt: skip
        subprocess.run([*git, "commit", "-qam", "motd: hello from the demo"], check=True)
        subprocess.run([*git, "push", "-q", doc["repo"], "HEAD:main"], check=True)
        rev = subprocess.run([*git, "rev-parse", "HEAD"], text=True, capture_output=True,
                             check=True).stdout.strip()  # fmt: skip
        print(sk("publish", "--repo", str(work), "--etcd", etcd, rev))
        took = wait_converged(etcd, rev, len(doc["nodes"]))
        print(f"all {len(doc['nodes'])} nodes converged on {rev[:12]} in {took:.1f} s")

        banner("kill manager-2 outright and boot it again")
        sk("sandbox", "reboot", "manager-2", "--dir", str(d), stream=True)
    except KeyboardInterrupt:
        print("\ninterrupted: tearing down")
    finally:
        if os.environ.get("KEEP"):
            print(f"\nKEEP set: the sandbox stays in {d}; `swarmkeeper sandbox down --dir {d}`")
        elif (d / "sandbox.json").exists():
            banner("swarmkeeper sandbox down")
            sk("sandbox", "down", "--dir", str(d), stream=True, check=False)
            d.parent.rmdir()
    print("done")


if __name__ == "__main__":
    main()
