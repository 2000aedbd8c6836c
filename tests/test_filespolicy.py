"""The node's files policy, one row per rule, and how its config values parse."""

from __future__ import annotations

import pytest

from reconciler.desired.filespolicy import FilesPolicy, ModeBit, check, parse_modes, parse_paths
from reconciler.models import FileSpec

POLICY = FilesPolicy(("/opt/", "/etc/motd"), frozenset({ModeBit.SETGID}))
LINES = {"/etc/shadow": ("state/roles/worker.yaml", 7)}


@pytest.mark.parametrize(
    ("path", "mode", "expected"),
    [
        ("/opt/app/x", 0o644, []),
        ("/etc/motd", 0o644, []),
        ("/etc/motd.d/x", 0o644, ["outside"]),  # an entry without "/" is one path only
        ("/optional", 0o644, ["outside"]),  # "/opt/" is a directory prefix, not a string one
        ("/etc/shadow", 0o600, ["outside"]),
        ("/opt/bin/x", 0o4755, ["setuid"]),
        ("/opt/bin/x", 0o2755, []),  # allowed by this policy
        ("/opt/x", 0o666, ["world-writable"]),
        ("/opt/x", 0o1777, ["world-writable"]),
        ("/root/.ssh/authorized_keys", 0o4777, ["outside", "setuid and world-writable"]),
        ("/etc/swarmkeeper/node.env", 0o644, []),  # swarmkeeper's own file
    ],
)
def test_rule(path: str, mode: int, expected: list[str]) -> None:
    found = check(POLICY, [FileSpec(path, b"x", mode)], LINES, "/etc/swarmkeeper/node.env")
    assert len(found) == len(expected)
    for p, word in zip(found, expected, strict=True):
        assert word in p.message


def test_a_problem_names_the_entry_line() -> None:
    (p,) = check(POLICY, [FileSpec("/etc/shadow", b"x", 0o600)], LINES)
    assert str(p).startswith("state/roles/worker.yaml:7: file /etc/shadow is outside")


def test_the_default_covers_this_repos_state() -> None:
    default = FilesPolicy()
    for path in ("/opt/swarmkeeper/bin/node-lifecycle.sh", "/etc/vault/vault.hcl", "/etc/motd"):
        assert default.allows_path(path)
    for path in ("/etc/shadow", "/root/.ssh/authorized_keys", "/etc/sudoers.d/x", "/usr/bin/x"):
        assert not default.allows_path(path)
    assert default.refused_bits(0o4755) == [ModeBit.SETUID]


@pytest.mark.parametrize(
    ("value", "expected"),
    [("/opt/,/etc/motd", ("/opt/", "/etc/motd")), (["/srv/"], ("/srv/",)), ("", ())],
)
def test_parse_paths(value: object, expected: tuple[str, ...]) -> None:
    assert parse_paths(value) == expected


@pytest.mark.parametrize("bad", ["opt/", "/a/../etc/", "/a//b"])
def test_parse_paths_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="not an absolute path"):
        parse_paths(bad)


def test_parse_modes() -> None:
    assert parse_modes("setuid, world-writable") == {ModeBit.SETUID, ModeBit.WORLD_WRITABLE}
    with pytest.raises(ValueError, match="'sticky' is not one of setuid, setgid, world-writable"):
        parse_modes(["sticky"])
