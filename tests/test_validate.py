"""Validation rules of the desired state, one row per rule, asserting the exact problem."""

from __future__ import annotations

import pytest

from reconciler.desired import RepoTree, validate_tree

GOOD: dict[str, bytes] = {
    "state/cluster.yaml": b"name: demo\nmanagers: 3\nprefix: /swarmkeeper\nrollout: {max_unavailable: 1}\nvars: {A: b}\n",
    "state/roles/manager.yaml": (
        b"units:\n"
        b"  - a.service\n"
        b"  - name: b.service\n"
        b"    on_change: reload\n"
        b"    enable: true\n"
        b"    settle: 500ms\n"
        b"files:\n"
        b'  - {path: /etc/x.env, source: files/x.env, mode: "0644"}\n'
        b'  - {path: /etc/motd, content: "hi\\n"}\n'
    ),
    "state/roles/worker.yaml": b"units: [a.service]\n",
    "state/nodes/node-1.yaml": b"role: manager\nunits_add: [c.service]\nunits_remove: [b.service]\npaused: false\nlabels: {zone: a}\n",
    "units/a.service": b"[Service]\nExecStart=/bin/true\n",
    "units/b.service": b"[Service]\nExecStart=/bin/true\n",
    "units/c.service": b"[Service]\nExecStart=/bin/true\n",
    "files/x.env": b"X=1\n",
}


def tree(changes: dict[str, bytes | None], links: dict[str, str] | None = None) -> RepoTree:
    files = {**GOOD, **changes}
    return RepoTree(files={k: v for k, v in files.items() if v is not None}, links=links or {})


def problems(changes: dict[str, bytes | None], links: dict[str, str] | None = None) -> list[str]:
    return [str(p) for p in validate_tree(tree(changes, links))]


def test_good_tree_is_valid() -> None:
    assert problems({}) == []


M = "state/roles/manager.yaml"
C = "state/cluster.yaml"
N = "state/nodes/node-1.yaml"
U = b"units: [a.service, b.service]\n"  # keeps node-1's units_remove valid

CASES: list[tuple[str, dict[str, bytes | None], list[str]]] = [
    ("yaml syntax", {C: b"name: demo\nmanagers: [3\n"},
     ["state/cluster.yaml:3: YAML syntax error: did not find expected ',' or ']'"]),
    ("duplicate key", {C: b"name: demo\nmanagers: 3\nname: other\n"},
     ["state/cluster.yaml:3: duplicate key 'name' (first at line 1): remove one"]),
    ("unknown key with did-you-mean", {C: b"name: demo\nmanagers: 3\nprefx: /x\n"},
     ["state/cluster.yaml:3: unknown key 'prefx' (did you mean 'prefix'?)"]),
    ("unknown nested key", {M: b"units:\n  - name: a.service\n    on_chnage: reload\n"},
     ["state/roles/manager.yaml:3: unknown key 'on_chnage' (did you mean 'on_change'?)"]),
    ("unknown key without a close match", {C: b"name: demo\nmanagers: 3\nzzz: 1\n"},
     ["state/cluster.yaml:3: unknown key 'zzz'; known keys: name, managers, prefix, rollout, vars, notify"]),
    ("wrong type", {C: b"name: demo\nmanagers: three\n"},
     ["state/cluster.yaml:2: managers: expected an integer, got string 'three'"]),
    ("number where a string is meant", {C: b"name: 123\nmanagers: 3\n"},
     ["state/cluster.yaml:1: name: expected a string, got number 123: quote it, e.g. name: \"123\""]),
    ("yaml 1.1 boolean", {C: b"name: demo\nmanagers: 3\nvars:\n  DEBUG: no\n"},
     ["state/cluster.yaml:4: vars.DEBUG: expected a string, got boolean false (YAML 1.1 reads 'no' as a boolean): quote it, e.g. DEBUG: \"no\""]),
    ("yaml 1.1 boolean key", {N: b"role: manager\nlabels:\n  on: a\n"},
     ["state/nodes/node-1.yaml:3: key 'on' is not a string (YAML 1.1 reads 'on' as a boolean): quote it"]),
    ("managers not in 1,3,5", {C: b"name: demo\nmanagers: 2\n"},
     ["state/cluster.yaml:2: managers: managers must be 1, 3 or 5 (an odd number keeps etcd and swarm quorum), not 2"]),
    ("missing required key", {C: b"name: demo\n"},
     ["state/cluster.yaml:1: missing required key 'managers'"]),
    ("unknown role in node", {N: b"role: boss\n"},
     ["state/nodes/node-1.yaml:1: role: string 'boss' is not allowed; use one of 'manager' or 'worker'"]),
    ("unknown role file", {"state/roles/boss.yaml": b"units: []\n"},
     ["state/roles/boss.yaml: unknown role 'boss': roles are manager and worker"]),
    ("missing role file", {"state/roles/worker.yaml": None},
     ["state/roles/: worker.yaml is missing: the worker role must be defined (create state/roles/worker.yaml; an empty file is fine)"]),
    ("missing cluster.yaml", {C: None},
     ["state/: cluster.yaml is missing: every state repo needs one (see docs/state-format.md, or `swarmkeeper init`)"]),
    ("unit name with slash", {M: b"units:\n  - ../etc/passwd.service\n"},
     ["state/roles/manager.yaml:2: units.0.name: '../etc/passwd.service' is not a valid systemd unit name: use letters, digits and ':_.-@', no '/', ending in .service, .socket, .target or another unit suffix (or a drop-in <unit>.d/<name>.conf)"]),
    ("unit name without suffix", {M: b"units:\n  - a.exe\n"},
     ["state/roles/manager.yaml:2: units.0.name: 'a.exe' is not a valid systemd unit name: use letters, digits and ':_.-@', no '/', ending in .service, .socket, .target or another unit suffix (or a drop-in <unit>.d/<name>.conf)"]),
    ("drop-in with a bad name", {M: b"units:\n  - a.service.d/x.txt\n"},
     ["state/roles/manager.yaml:2: units.0.name: 'a.service.d/x.txt' is not a valid drop-in: write <unit>.d/<name>.conf, e.g. docker.service.d/10-flags.conf"]),
    ("drop-in escaping its directory", {M: b"units:\n  - a.service.d/../../x.conf\n"},
     ["state/roles/manager.yaml:2: units.0.name: 'a.service.d/../../x.conf' is not a valid drop-in: write <unit>.d/<name>.conf, e.g. docker.service.d/10-flags.conf"]),
    ("unit listed twice", {M: b"units:\n  - a.service\n  - b.service\n  - a.service\n"},
     ["state/roles/manager.yaml:4: unit a.service listed twice (first at line 2): remove one"]),
    ("unit file missing", {M: b"units:\n  - a.service\n  - b.service\n  - nope.service\n"},
     ["state/roles/manager.yaml:4: unit file units/nope.service not found: add it or remove this entry"]),
    ("file source missing", {M: U + b"files:\n  - path: /etc/y\n    source: files/y\n"},
     ["state/roles/manager.yaml:4: source files/y does not exist: add it or fix the path"]),
    ("file source outside files/", {M: b"files:\n  - {path: /etc/y, source: state/cluster.yaml}\n"},
     ["state/roles/manager.yaml:2: files.0: source 'state/cluster.yaml' must be a normalised path under files/, e.g. files/extra.env"]),
    ("relative destination", {M: b"files:\n  - {path: etc/y, content: x}\n"},
     ["state/roles/manager.yaml:2: files.0.path: 'etc/y' is not an absolute normalised path: write it like /etc/app/config (starting with '/', no '..', '.', '//' or trailing '/')"]),
    ("non-normalised destination", {M: b"files:\n  - {path: /etc/../y, content: x}\n"},
     ["state/roles/manager.yaml:2: files.0.path: '/etc/../y' is not an absolute normalised path: write it like /etc/app/config (starting with '/', no '..', '.', '//' or trailing '/')"]),
    ("invalid mode", {M: b"files:\n  - {path: /etc/y, content: x, mode: \"0999\"}\n"},
     ["state/roles/manager.yaml:2: files.0.mode: mode '0999' is not an octal file mode: write it like \"0644\""]),
    ("mode as a number", {M: b"files:\n  - {path: /etc/y, content: x, mode: 644}\n"},
     ["state/roles/manager.yaml:2: files.0.mode: expected a string, got number 644: quote it, e.g. mode: \"644\""]),
    ("mode written like octal", {M: b"files:\n  - {path: /etc/y, content: x, mode: 0644}\n"},
     ["state/roles/manager.yaml:2: files.0.mode: expected a string, got number 420 (YAML 1.1 reads 0644 as 420): quote it, e.g. mode: \"0644\""]),
    ("a bad mode does not hide a missing unit file",
     {M: b"units: [a.service, b.service, nope.service]\nfiles:\n  - {path: /etc/y, content: x, mode: 0644}\n"},
     ["state/roles/manager.yaml:1: unit file units/nope.service not found: add it or remove this entry",
      "state/roles/manager.yaml:3: files.0.mode: expected a string, got number 420 (YAML 1.1 reads 0644 as 420): quote it, e.g. mode: \"0644\""]),
    ("every file's problems in one run",
     {C: b"name: demo\nmanagers: 2\n", N: b"role: boss\n", M: b"units: [a.service, nope.service]\n"},
     ["state/cluster.yaml:2: managers: managers must be 1, 3 or 5 (an odd number keeps etcd and swarm quorum), not 2",
      "state/nodes/node-1.yaml:1: role: string 'boss' is not allowed; use one of 'manager' or 'worker'",
      "state/roles/manager.yaml:1: unit file units/nope.service not found: add it or remove this entry"]),
    ("file too large", {"files/x.env": b"x" * (1024 * 1024 + 1)},
     ["files/x.env: file is larger than 1048576 bytes"]),
    ("both source and content", {M: b"files:\n  - {path: /etc/y, content: x, source: files/x.env}\n"},
     ["state/roles/manager.yaml:2: files.0: give exactly one of source (a file under files/) or content"]),
    ("file listed twice", {M: U + b"files:\n  - {path: /etc/y, content: x}\n  - {path: /etc/y, content: z}\n"},
     ["state/roles/manager.yaml:4: file /etc/y listed twice (first at line 3): remove one"]),
    ("env file is reserved", {M: U + b"files:\n  - {path: /etc/swarmkeeper/node.env, content: x}\n"},
     ["state/roles/manager.yaml:3: /etc/swarmkeeper/node.env is written by swarmkeeper itself: use cluster vars"]),
    ("reserved var", {C: b"name: demo\nmanagers: 1\nvars:\n  PRIVATE_IPV4: x\n"},
     ["state/cluster.yaml:4: vars key PRIVATE_IPV4 is set by swarmkeeper itself: rename it"]),
    ("remove a unit the role lacks", {N: b"role: manager\nunits_remove: [zzz.service]\n"},
     ["state/nodes/node-1.yaml:2: units_remove: zzz.service is not a unit of role manager: remove this entry"]),
    ("add a unit the role has", {N: b"role: manager\nunits_add: [a.service]\n"},
     ["state/nodes/node-1.yaml:2: units_add: a.service is already a unit of role manager"]),
    ("bad duration", {M: b"units:\n  - name: a.service\n    timeout: soon\n"},
     ["state/roles/manager.yaml:3: units.0.timeout: invalid duration 'soon': write it like 30s, 2m or 1h30m"]),
    ("settle longer than timeout", {M: b"units:\n  - name: a.service\n    timeout: 1s\n    settle: 2s\n  - b.service\n"},
     ["state/roles/manager.yaml:2: units.0: settle (2s) is longer than timeout (1s): the health gate gives up after timeout; raise timeout or lower settle"]),
    ("negative settle", {M: b"units:\n  - {name: a.service, settle: -0.5}\n  - b.service\n"},
     ["state/roles/manager.yaml:2: units.0.settle: settle -0.5 must be 0 or more seconds (at most 24h)"]),
    ("bad settle", {M: b"units:\n  - name: a.service\n    settle: a while\n  - b.service\n"},
     ["state/roles/manager.yaml:3: units.0.settle: invalid duration 'a while': write it like 30s, 2m or 1h30m"]),
    ("top level is a list", {C: b"- name\n"},
     ["state/cluster.yaml:1: expected a mapping of keys at the top level"]),
    ("unexpected state file", {"state/extra.yaml": b"a: 1\n"},
     ["state/extra.yaml: unexpected state file: expected state/cluster.yaml, state/roles/<role>.yaml or state/nodes/<node>.yaml"]),
    ("python tag", {C: b"name: !!python/object:os.system x\nmanagers: 1\n"},
     ["state/cluster.yaml:1: cannot read value: could not determine a constructor for the tag 'tag:yaml.org,2002:python/object:os.system'"]),
    ("key with a newline stays on one line", {C: b"name: demo\nmanagers: 3\nvars:\n  ? \"a\\nb\"\n  : null\n"},
     ["state/cluster.yaml:4: vars.a\\nb: expected a string, got nothing (null)"]),
    ("not utf-8", {C: b"name: \xff\n"},
     ["state/cluster.yaml:1: not UTF-8 text (byte 6): save it as UTF-8"]),
    ("notifier with inline url", {C: b"name: demo\nmanagers: 1\nnotify:\n  - {type: slack, url: 'https://x'}\n"},
     ["state/cluster.yaml:4: unknown key 'url' (did you mean 'url_env'?)"]),
    ("notifier without url source", {C: b"name: demo\nmanagers: 1\nnotify:\n  - {type: slack}\n"},
     ["state/cluster.yaml:4: notify.0: give exactly one of url_env or url_file (the URL itself stays on the node, never in git)"]),
    # bounds: nothing a later step relies on may pass unchecked
    ("integer past python's digit limit", {C: b"name: demo\nmanagers: 1\nrollout: {max_unavailable: " + b"9" * 5000 + b"}\n"},
     ["state/cluster.yaml:3: integer is too long (Python reads at most 4300 digits): shorten it or quote it"]),
    ("impossible date", {C: b"name: demo\nmanagers: 1\nvars: {A: 2001-13-45}\n"},
     ["state/cluster.yaml:3: cannot read value '2001-13-45' (month must be in 1..12): quote it if it is text"]),
    ("nesting", {N: b"role: manager\nlabels: {a: " + b"[" * 40 + b"]" * 40 + b"}\n"},
     ["state/nodes/node-1.yaml:2: nested deeper than 32 levels: flatten it"]),
    ("huge max_unavailable", {C: b"name: demo\nmanagers: 1\nrollout: {max_unavailable: 100000}\n"},
     ["state/cluster.yaml:3: rollout.max_unavailable: Input should be less than or equal to 1000"]),
    ("too many files", {M: U + b"files:\n" + b"".join(b"  - {path: /f/%d, content: x}\n" % i for i in range(1001))},
     ["state/roles/manager.yaml:2: files: List should have at most 1000 items after validation, not 1001"]),
    ("NUL in a path", {M: U + b'files:\n  - {path: "/etc/a\\0b", content: x}\n'},
     ["state/roles/manager.yaml:3: files.0.path: '/etc/a\\x00b' contains a NUL byte: remove it"]),
    ("newline in a path", {M: U + b'files:\n  - {path: "/etc/a\\nb", content: x}\n'},
     ["state/roles/manager.yaml:3: files.0.path: '/etc/a\\nb' contains a control character (a newline, a tab...): remove it"]),
    ("path component past NAME_MAX", {M: U + b"files:\n  - {path: /etc/" + b"x" * 242 + b", content: x}\n"},
     [f"state/roles/manager.yaml:3: files.0.path: path component {'x' * 40!r}... is 242 bytes long: at most 241 (its temp file must fit in 255)"]),
    ("component long in bytes", {M: U + "files:\n  - {{path: /etc/{}, content: x}}\n".format("é" * 121).encode()},
     [f"state/roles/manager.yaml:3: files.0.path: path component {'é' * 40!r}... is 242 bytes long: at most 241 (its temp file must fit in 255)"]),
    ("path too long", {M: U + b"files:\n  - {path: " + b"/d234567" * 400 + b", content: x}\n"},
     [f"state/roles/manager.yaml:3: files.0.path: path {'/d234567' * 5!r}... is 3200 bytes long: at most 3072"]),
    ("unit name past the temp file limit", {M: b"units: [" + b"u" * 234 + b".service]\n"},
     [f"state/roles/manager.yaml:1: units.0.name: unit name {'u' * 40!r}... is 242 bytes long: at most 241 (its temp file must fit in 255)"]),
    ("file under a file", {M: U + b"files:\n  - {path: /etc/a/b, content: x}\n  - {path: /etc/a, content: y}\n"},
     ["state/roles/manager.yaml:3: file /etc/a/b lies under the file /etc/a: one path cannot be both a file and a directory"]),
    ("file over the env file", {M: U + b"files:\n  - {path: /etc/swarmkeeper, content: x}\n"},
     ["state/roles/manager.yaml:3: /etc/swarmkeeper is a directory of /etc/swarmkeeper/node.env: pick another path"]),
]  # fmt: skip


@pytest.mark.parametrize(("changes", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule(changes: dict[str, bytes | None], expected: list[str]) -> None:
    assert problems(changes) == expected


def test_every_problem_is_reported_at_once() -> None:
    got = problems(
        {
            C: b"name: demo\nmanagers: 4\n",
            M: b"units:\n  - nope.service\n",
            N: b"role: manager\nlabelz: {}\n",
        }
    )
    assert got == [
        "state/cluster.yaml:2: managers: managers must be 1, 3 or 5 (an odd number keeps etcd and swarm quorum), not 4",
        "state/nodes/node-1.yaml:2: unknown key 'labelz' (did you mean 'labels'?)",
        "state/roles/manager.yaml:2: unit file units/nope.service not found: add it or remove this entry",
    ]


SYMLINK_CASES = [
    ("link leaving the repo", {"units/a.service": None}, {"units/a.service": "../../etc/passwd"},
     ["state/roles/manager.yaml:2: unit a.service: units/a.service is a symlink that leaves the repository",
      "state/roles/worker.yaml:1: unit a.service: units/a.service is a symlink that leaves the repository"]),
    ("absolute link", {"files/x.env": None}, {"files/x.env": "/etc/shadow"},
     ["state/roles/manager.yaml:8: source files/x.env is a symlink to an absolute path (/etc/shadow): use a regular file"]),
    ("link inside the repo is followed", {"units/c.service": None}, {"units/c.service": "a.service"}, []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "links", "expected"),
    [c[1:] for c in SYMLINK_CASES],
    ids=[c[0] for c in SYMLINK_CASES],
)
def test_symlinks(
    changes: dict[str, bytes | None], links: dict[str, str], expected: list[str]
) -> None:
    assert problems(changes, links) == expected
