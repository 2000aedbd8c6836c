"""Bad ``params.yml`` inputs: every problem at once as ``path:line: message``, exit 1.

A table of broken params run through the real CLI (exact stderr lines), and a hypothesis
property: random mutations of valid params give either user-data that passes the Ignition
structure check, or ``path:line:`` problems — never an exception.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudconfig.generate import generate
from cloudconfig.params import load_params
from reconciler.cli import main
from reconciler.errors import InvalidDesiredState
from tests.fixtures.userdata import BASE_PARAMS, ignition_problems

BASE = BASE_PARAMS
STATIC = "  static: [10.0.0.11, 10.0.0.12, 10.0.0.13]"
PREFIX = "prefix: /swarmkeeper"

# (id, text to replace in BASE, replacement, expected stderr problem lines)
CASES: list[tuple[str, str, str, list[str]]] = [
    ("managers-4", "managers: 3", "managers: 4",
     ["P:3: cluster.managers: managers must be 1, 3 or 5 (an odd number keeps etcd and swarm quorum), not 4"]),
    ("managers-0", "managers: 3", "managers: 0",
     ["P:3: cluster.managers: managers must be 1, 3 or 5 (an odd number keeps etcd and swarm quorum), not 0"]),
    ("managers-string", "managers: 3", "managers: '3'",
     ["P:3: cluster.managers: expected an integer, got string '3'"]),
    ("no-discovery-no-static", STATIC, "  image: quay.io/coreos/etcd:v3.5.17",
     ["P:4: etcd: give discovery (a discovery URL) or static (the managers' addresses)"]),
    ("etcd-missing", "etcd:\n" + STATIC + "\n", "",
     ["P:1: missing required key 'etcd'"]),
    ("static-count", STATIC, "  static: [10.0.0.11, 10.0.0.12]",
     ["P:5: etcd.static lists 2 address(es) but cluster.managers is 3: list one private "
      "address per manager"]),
    ("both", STATIC, STATIC + "\n  discovery: https://discovery.etcd.io/abc",
     ["P:5: etcd: give discovery or static, not both"]),
    ("bad-discovery", STATIC, "  discovery: discovery.etcd.io/abc",
     ["P:5: etcd.discovery: 'discovery.etcd.io/abc' is not a discovery URL: write it like "
      "https://discovery.etcd.io/<token> (get one with `swarmkeeper cloudconfig discovery-url "
      "--size N`)"]),
    ("static-not-ip", STATIC, "  static: [10.0.0.11, node2, 10.0.0.13]",
     ["P:5: etcd.static: 'node2' is not an IPv4 address: list the managers' private addresses"]),
    ("unknown-top-key", "cluster:", "clustr:",
     ["P:1: missing required key 'cluster'",
      "P:1: unknown key 'clustr' (did you mean 'cluster'?)"]),
    ("unknown-nested-key", "  managers: 3", "  managers: 3\n  nodes: 3",
     ["P:4: unknown key 'nodes'; known keys: name, managers"]),
    ("yaml11-bool", "  branch: main", "  branch: no",
     ['P:8: repo.branch: expected a string, got boolean false (YAML 1.1 reads \'no\' as a '
      'boolean): quote it, e.g. branch: "no"']),
    ("duplicate-key", PREFIX, PREFIX + "\nprefix: /other",
     ["P:12: duplicate key 'prefix' (first at line 11): remove one"]),
    ("syntax", PREFIX, "prefix: [unclosed",
     ["P:12: YAML syntax error: did not find expected ',' or ']'"]),
    ("fcos-needs-fleet-lock", PREFIX, "os: fcos",
     ["P:11: os fcos coordinates reboots through zincati's fleet_lock: set "
      "updates.fleet_lock_url (a FleetLock server such as airlock) or "
      "updates.reboot_strategy: off"]),
    ("files", PREFIX,
     "files:\n  - {path: /etc/motd, content: hi, mode: 0644}\n  - {path: etc/x, content: hi}",
     ['P:12: files.0.mode: YAML reads an unquoted mode as a number (0644): quote it, e.g. "0644"',
      "P:13: files.1.path: 'etc/x' is not an absolute normalised path: write it like "
      "/etc/app/config (starting with '/', no '..', '.', '//' or trailing '/')"]),
    ("files-reserved-and-missing-source", PREFIX,
     "files:\n  - {path: /etc/swarmkeeper/agent.env, content: x}\n  - {path: /etc/a, source: nope.txt}",
     ["P:12: files: /etc/swarmkeeper/agent.env is written by the generator itself",
      "P:13: files: cannot read 'nope.txt': No such file or directory"]),
    ("slack-both", PREFIX, "slack: {webhook_url_file: /x, webhook_url: 'https://h'}",
     ["P:11: slack: give exactly one of webhook_url_file (a path on the node) or webhook_url "
      "(inlines the secret into user-data)"]),
    ("slack-file-with-space", PREFIX, "slack: {webhook_url_file: '/etc/my secrets/url'}",
     ["P:11: slack.webhook_url_file: '/etc/my secrets/url': use only letters, digits and '._/-' "
      "in the path"]),
    ("slack-url-multiline", PREFIX, "slack: {webhook_url: \"https://h/x\\nInjected=1\"}",
     ["P:11: slack.webhook_url: webhook_url must be an https:// URL without spaces"]),
    ("ssh-keys-not-list", PREFIX, "ssh_authorized_keys: ssh-ed25519 AAAA",
     ["P:11: ssh_authorized_keys: expected a list, got string 'ssh-ed25519 AAAA'"]),
    ("several-at-once", "managers: 3", "managers: 5\n  size: 1",
     ["P:4: unknown key 'size'; known keys: name, managers"]),
    ("many-problems", "  image: registry.lab.internal/swarmkeeper:0.1.0", "  image: 'Not An Image'\n  runtime: rkt",
     ["P:10: agent.image: 'Not An Image' is not an image reference: write it like "
      "registry/name:tag",
      "P:11: agent.runtime: string 'rkt' is not allowed; use one of 'docker' or 'podman'"]),
    ("empty", BASE, "", ["P:1: empty file: start from `cloudconfig init`"]),
    ("not-a-mapping", BASE, "- a\n- b\n", ["P:1: document: expected a mapping, got a list"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_params_report_every_problem_with_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, expected: list[str]
) -> None:
    assert old in BASE
    params = tmp_path / "params.yml"
    params.write_text(BASE.replace(old, new))
    code = main(["cloudconfig", "--params", str(params), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.splitlines()
    assert code == 1
    assert err == [line.replace("P:", f"{params}:", 1) for line in expected] + [
        f"{len(expected)} problem(s) found"
    ]
    assert not (tmp_path / "out").exists()  # nothing written


def test_fcos_with_cloud_config_format_is_refused_at_the_os_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    params = tmp_path / "params.yml"
    params.write_text(BASE + "os: fcos\nupdates: {reboot_strategy: 'off'}\n")
    code = main(["cloudconfig", "--params", str(params), "--out", str(tmp_path / "o"), "--format", "both"])  # fmt: skip
    assert code == 1
    assert capsys.readouterr().err.splitlines()[0] == (
        f"{params}:12: os fcos reads Ignition only: use --format ignition"
    )


def test_the_installed_command_exits_1_without_a_traceback(tmp_path: Path) -> None:
    params = tmp_path / "params.yml"
    params.write_text(BASE.replace("managers: 3", "managers: 2"))
    r = subprocess.run(
        [sys.executable, "-m", "reconciler", "cloudconfig", "--params", str(params), "--out", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 1
    assert r.stderr == (
        f"{params}:3: cluster.managers: managers must be 1, 3 or 5 (an odd number keeps etcd and swarm quorum), not 2\n"
        "1 problem(s) found\n"
    )
    missing = subprocess.run(
        [sys.executable, "-m", "reconciler", "cloudconfig", "--params", str(tmp_path / "nope.yml"), "--out", str(tmp_path)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert missing.returncode == 1
    assert (
        missing.stderr.endswith("No such file or directory\n") and "Traceback" not in missing.stderr
    )


# --- property: any mutation gives user-data or path:line problems -------------------------

VALID: dict[str, Any] = {
    "cluster": {"name": "prod", "managers": 3},
    "etcd": {"discovery": "https://discovery.etcd.io/0123abcd", "image": "quay.io/coreos/etcd:v3.5.17"},
    "repo": {"url": "https://git.lab.internal/ops/cluster.git", "branch": "main"},
    "agent": {"image": "registry.lab.internal/swarmkeeper:0.1.0", "extra_volumes": ["/srv:/srv"]},
    "prefix": "/swarmkeeper",
    "ssh_authorized_keys": ["ssh-ed25519 AAAAC3Nza ops"],
    "slack": {"webhook_url_file": "/etc/swarmkeeper/slack-url"},
    "files": [{"path": "/etc/motd", "content": "hi\n", "mode": "0644"}],
    "updates": {"reboot_strategy": "etcd-lock"},
}  # fmt: skip

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 70000), st.floats(allow_nan=False),
    st.text(max_size=30), st.sampled_from(["0644", "no", "on", "/etc/x", "10.0.0.1", "5", "fcos", "off"]),
)  # fmt: skip
junk = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)  # fmt: skip


def _paths(doc: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*at, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*at, i))
    return out


@st.composite
def mutated(draw: st.DrawFn) -> str:
    doc = json.loads(json.dumps(VALID))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for p in path[:-1]:
            parent = parent[p]
        action = draw(st.sampled_from(["drop", "replace", "insert"]))
        if not path:
            if action == "replace":
                doc = draw(junk)
            continue
        key = path[-1]
        if action == "drop":
            del parent[key]
        elif action == "replace":
            parent[key] = draw(junk)
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = draw(junk)
        else:
            parent.insert(key, draw(junk))
    text = yaml.safe_dump(doc, sort_keys=False)
    if draw(st.booleans()):  # sometimes break the YAML itself
        cut = draw(st.integers(0, len(text)))
        text = (
            text[:cut]
            + draw(st.sampled_from(["", ":", "- [", "\t", "{", "&a *a", "\n  x: 1"]))
            + text[cut:]
        )
    return text


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_params_give_user_data_or_line_problems_never_an_exception(text: str) -> None:
    try:
        loaded = load_params("params.yml", text.encode(), "/nonexistent")
    except InvalidDesiredState as e:
        assert e.problems
        for p in e.problems:
            assert p.path == "params.yml" and p.line >= 1 and p.message, p
            assert str(p).startswith(f"params.yml:{p.line}: ")
        return
    out = generate(loaded, ["cloud-config", "ignition"])
    for name in ("manager.ign", "worker.ign"):
        assert ignition_problems(json.loads(out[name])) == []
    for name in ("manager.yml", "worker.yml"):
        assert isinstance(yaml.safe_load(out[name]), dict)
