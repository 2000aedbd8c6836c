"""``swarmkeeper init DIR``: scaffold a state repository that validates as written.

Writes ``state/cluster.yaml``, both role files, one example node file and one example unit
(each file commented, each write atomic), then validates the result exactly as ``validate``
would, so what it made is known to be good. Refuses a directory that already has ``state/``
(nothing is overwritten).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from reconciler.commands._output import print_json, wants_json
from reconciler.errors import UsageError

NAME = "init"
HELP = "scaffold a new state repository in DIR (it validates as written)"

_CLUSTER = """\
# Cluster-wide settings. See docs/state-format.md.
name: {name}
managers: {managers}                  # 1, 3 or 5: an odd number keeps etcd and swarm quorum
prefix: {prefix}         # etcd key prefix every agent uses (publish checks it)
rollout:
  max_unavailable: 1         # workers updated at once (managers always one at a time)
vars: {{}}                     # extra KEY=value lines for /etc/swarmkeeper/node.env
"""

_ROLE = """\
# Units every {role} runs, started in this order (stopped in reverse).
units:
  - hello.service
files:
  - {{path: /etc/motd, content: "managed by swarmkeeper: changes here are overwritten\\n", mode: "0644"}}
"""

_NODE = """\
# One file per node whose role or units differ from its role's defaults (optional).
role: manager
labels: {}
"""

_UNIT = """\
# An example unit: replace it with your own (units/<name> is what the roles list).
[Unit]
Description=swarmkeeper example unit

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="the directory to create or fill")
    p.add_argument("--name", default="", help="cluster name (default: DIR's name)")
    p.add_argument("--managers", type=int, default=3, choices=[1, 3, 5],
                   help="number of managers (default 3)")  # fmt: skip
    p.add_argument("--prefix", default="/swarmkeeper", help="etcd key prefix")
    p.add_argument("--json", action="store_true", help="print one JSON document")


def scaffold(name: str, managers: int, prefix: str) -> dict[str, str]:
    """Pure: path -> content of a new state repository."""
    return {
        "state/cluster.yaml": _CLUSTER.format(name=name, managers=managers, prefix=prefix),
        "state/roles/manager.yaml": _ROLE.format(role="manager"),
        "state/roles/worker.yaml": _ROLE.format(role="worker"),
        "state/nodes/manager-1.yaml": _NODE,
        "units/hello.service": _UNIT,
        "files/.keep": "",
    }


def _cluster_name(path: Path) -> str:
    raw = path.resolve().name.lower()
    name = "".join(c if c.isalnum() else "-" for c in raw).strip("-")
    return name or "cluster"


def run(args: argparse.Namespace) -> int:
    from cloudconfig.generate import atomic_write
    from reconciler.desired import load_state
    from reconciler.source import read_dir

    root = Path(args.dir)
    if (root / "state").exists():
        raise UsageError(f"{root / 'state'} exists: init never overwrites a state repository")
    if root.exists() and not root.is_dir():
        raise UsageError(f"{root} exists and is not a directory")
    files = scaffold(args.name or _cluster_name(root), args.managers, args.prefix)
    for rel, content in files.items():
        target = root / rel
        os.makedirs(target.parent, exist_ok=True)
        atomic_write(str(target), content.encode())
    state = load_state(read_dir(root))  # what was written must validate: a bug otherwise
    if wants_json(args):
        print_json("Scaffold", {"dir": str(root), "cluster": state.cluster.name,
                                "files": sorted(files)})  # fmt: skip
        return 0
    for rel in sorted(files):
        print(f"wrote {root / rel}")
    print(f"ok: {root} validates (cluster {state.cluster.name}); next: "
          f"`git -C {root} init && git -C {root} add -A && git -C {root} commit -m init`")  # fmt: skip
    return 0
