"""Time to load, validate and render a 200-node state tree.

Prints the median of several runs for: reading the tree from a directory, validating it
(load_state), rendering all 200 nodes, and the raw baseline of parsing the same YAML with
PyYAML's C loader and nothing else, with the ratio. Target: the whole tree under 100 ms.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from reconciler.desired import load_state, render_state
from reconciler.models import NodeFacts, NodeName
from reconciler.source import read_tree

NODES = 200
UNITS_PER_ROLE = 20


def build(root: Path) -> None:
    (root / "state/roles").mkdir(parents=True)
    (root / "state/nodes").mkdir()
    (root / "units").mkdir()
    (root / "files").mkdir()
    (root / "state/cluster.yaml").write_text(
        "name: bench\nmanagers: 5\nprefix: /swarmkeeper\nrollout: {max_unavailable: 2}\n"
        "vars: {A: '1', B: '2'}\n"
    )
    for role in ("manager", "worker"):
        lines = ["units:"]
        for i in range(UNITS_PER_ROLE):
            name = f"{role}-{i:02}.service"
            (root / "units" / name).write_text(
                f"[Unit]\nDescription={name}\n[Service]\nEnvironmentFile=/etc/swarmkeeper/node.env\n"
                f"ExecStart=/bin/sleep infinity\n[Install]\nWantedBy=default.target\n"
            )
            lines.append(
                f"  - name: {name}\n    on_change: {'reload' if i % 3 else 'restart'}\n    timeout: 20s"
            )
        lines.append("files:")
        for i in range(10):
            (root / f"files/{role}-{i}.conf").write_text(f"setting={i}\n" * 20)
            lines.append(
                f"  - {{path: /etc/app/{role}-{i}.conf, source: files/{role}-{i}.conf, mode: '0644'}}"
            )
        (root / f"state/roles/{role}.yaml").write_text("\n".join(lines) + "\n")
    for n in range(NODES):
        role = "manager" if n < 5 else "worker"
        (root / f"state/nodes/node-{n:03}.yaml").write_text(
            f"role: {role}\nlabels: {{zone: z{n % 3}, rack: r{n % 7}}}\n"
            f"units_remove: [{role}-{n % UNITS_PER_ROLE:02}.service]\npaused: false\n"
        )


def median_ms(fn: object, runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        build(root)
        tree = read_tree(root)
        yaml_files = [v for k, v in tree.files.items() if k.endswith(".yaml")]
        state = load_state(tree)
        facts = [NodeFacts(NodeName(f"node-{n:03}")) for n in range(NODES)]

        t_read = median_ms(lambda: read_tree(root))
        t_raw = median_ms(lambda: [yaml.load(b, Loader=yaml.CSafeLoader) for b in yaml_files])
        t_validate = median_ms(lambda: load_state(tree))
        t_render = median_ms(lambda: [render_state(state, f) for f in facts])
        t_one = median_ms(lambda: render_state(state, facts[7]), runs=200)
        total = t_read + t_validate + t_render
        print(
            f"state: {NODES} node files, 2 roles x {UNITS_PER_ROLE} units, {len(tree.files)} files"
        )
        print(f"read tree from directory      {t_read:8.2f} ms")
        print(f"load + validate (whole tree)  {t_validate:8.2f} ms")
        print(
            f"render all {NODES} nodes          {t_render:8.2f} ms  ({t_one * 1000:.0f} us per node)"
        )
        print(
            f"total                         {total:8.2f} ms   target < 100 ms: {'OK' if total < 100 else 'MISSED'}"
        )
        print(f"raw baseline: CSafeLoader on the same {len(yaml_files)} YAML files: {t_raw:.2f} ms")
        print(f"ratio validate / raw parse: {t_validate / t_raw:.2f}x")


if __name__ == "__main__":
    main()
