"""The unit-file reader: a table of systemd syntax cases and a round-trip property."""

from __future__ import annotations

import posixpath
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.plan import unitfile
from tests.fixtures.systemd_user import UserManager


@pytest.mark.parametrize(
    ("text", "paths"),
    [
        ("[Service]\nEnvironmentFile=/etc/a.env\n", {"/etc/a.env"}),
        ("[Service]\nEnvironmentFile=-/etc/a.env\n", {"/etc/a.env"}),
        ("[Service]\nEnvironmentFile = - /etc/a.env \n", {"/etc/a.env"}),
        ("[Service]\nExecStart=/opt/bin/run /etc/x.conf\n", {"/opt/bin/run", "/etc/x.conf"}),
        (
            "[Service]\nExecStart=-/opt/bin/run --config=/etc/x.conf\n",
            {"/opt/bin/run", "/etc/x.conf"},
        ),
        ("[Service]\nExecStartPre=!!/bin/sh -c 'echo hi'\n", {"/bin/sh"}),
        ("[Service]\nExecReload=/bin/kill -HUP $MAINPID\n", {"/bin/kill"}),
        (
            "[Service]\nExecStart=/bin/run ${CONF} %h/x /etc/./a//b.conf\n",
            {"/bin/run", "/etc/a/b.conf"},
        ),
        ("[Service]\nExecStop=/etc/stop.sh\n", set()),  # stopping reads nothing we restart for
        (
            "[Service]\nExecStart=/bin/run \\\n  /etc/continued.conf\n",
            {"/bin/run", "/etc/continued.conf"},
        ),
        (
            "[Service]\nExecStart=/bin/run \\\n# comment inside\n  /etc/c.conf\n",
            {"/bin/run", "/etc/c.conf"},
        ),
        ("# EnvironmentFile=/etc/commented\n[Service]\n;ExecStart=/etc/no\n", set()),
        ("EnvironmentFile=/etc/outside-a-section\n", set()),
        ("[Service]\nExecStart=/bin/run 'unbalanced /etc/q\n", {"/bin/run", "/etc/q"}),
    ],
)
def test_referenced_paths(text: str, paths: set[str]) -> None:
    assert unitfile.referenced_paths(text) == paths


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[Unit]\n[Service]\nExecStart=/bin/true\n", False),
        ("[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=default.target\n", True),
        ("[Install]\n", False),  # an empty section installs nothing
        ("[Service]\n# [Install]\n", False),
    ],
)
def test_has_install(text: str, expected: bool) -> None:
    assert unitfile.has_install(text) is expected


def test_dropin_unit() -> None:
    assert unitfile.dropin_unit("/etc/systemd/system/x.service.d/10-a.conf") == "x.service"
    assert unitfile.dropin_unit("/etc/x.d/a.conf") is None
    assert unitfile.dropin_unit("/etc/x.service.d/a.txt") is None


KEYS = st.from_regex(r"[A-Z][A-Za-z]{0,8}", fullmatch=True) | st.sampled_from(
    ["ExecStart", "ExecReload", "EnvironmentFile"]
)
VALUES = (
    st.from_regex(r"[A-Za-z0-9/=._ -]{0,30}", fullmatch=True)
    .map(str.strip)
    .filter(lambda v: not v.endswith("\\"))
)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Unit", "Service", "Install"]),
            st.lists(st.tuples(KEYS, VALUES, st.integers(0, 3)), max_size=5),
        ),
        max_size=4,
    ),
    st.sampled_from(["\n", "\r\n"]),
)
def test_parse_round_trips_rendered_directives(
    sections: list[tuple[str, list[tuple[str, str, int]]]], eol: str
) -> None:
    text, expected = "# generated\n", []
    for name, directives in sections:
        text += f"[{name}]{eol}"
        for key, value, splits in directives:
            words = value.split(" ")
            if splits and len(words) > 1:  # continuation lines, with a comment in between
                cut = min(splits, len(words) - 1)
                text += f"{key}={' '.join(words[:cut])} \\{eol}; note{eol}  {' '.join(words[cut:])}{eol}"
                expected.append((name, key, " ".join(words[:cut]) + "  " + " ".join(words[cut:])))
            else:
                text += f"  {key} = {value}{eol}"
                expected.append((name, key, value))
        text += eol
    got = [(d.section, d.key, d.value) for d in unitfile.parse(text).directives]
    assert [(s, k, " ".join(v.split())) for s, k, v in got] == [
        (s, k, " ".join(v.split())) for s, k, v in expected
    ]
    refs = unitfile.referenced_paths(text)
    for _, k, v in expected:
        if k in unitfile.EXEC_KEYS and v.startswith("/"):
            assert posixpath.normpath(v.split()[0]) in refs
        if k == "EnvironmentFile" and v.startswith("/"):
            assert posixpath.normpath(" ".join(v.split())) in refs or " " in v


@given(st.binary(max_size=300))
def test_parser_never_raises(data: bytes) -> None:
    unitfile.parse(data)
    unitfile.referenced_paths(data)
    unitfile.has_install(data)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("backup.timer", "[Timer]\nOnCalendar=daily\n", "backup.service"),
        ("backup.timer", "[Timer]\nOnCalendar=daily\nUnit=other.service\n", "other.service"),
        ("web.socket", "[Socket]\nListenStream=80\n", "web.service"),
        ("web.socket", "[Socket]\nListenStream=80\nAccept=yes\n", "web@.service"),
        (
            "log.socket",
            "[Socket]\nListenDatagram=/run/l\nService=journal.service\n",
            "journal.service",
        ),
        ("log.socket", "[Socket]\nListenStream=80\nUnit=ignored.service\n", "log.service"),
        ("watch.path", "[Path]\nPathChanged=/etc/x\n", "watch.service"),
        ("a.service", "[Service]\nExecStart=/bin/true\n", None),
    ],
)
def test_triggers(name: str, text: str, expected: str | None) -> None:
    assert unitfile.triggers(name, text) == expected


def test_lines_end_where_systemd_ends_them() -> None:
    # \x1e and \u2028 are line breaks to str.splitlines, not to systemd
    f = unitfile.parse("[Service]\nExecStart=/bin/echo a\x1eb\u2028c\r\nType=oneshot\rX=1")
    assert f.values("Service", "ExecStart") == ("/bin/echo a\x1eb\u2028c",)
    assert f.values("Service", "Type") == ("oneshot",) and f.values("Service", "X") == ("1",)


VENDOR_SOCKETS = sorted(
    p for p in Path("/lib/systemd/system").glob("*.socket") if "@" not in p.name
)


@pytest.mark.services
def test_triggers_agrees_with_systemd_on_every_vendor_socket(systemd_user: UserManager) -> None:
    """Debian's own sockets (journald's name their service with ``Service=``), loaded by a
    real manager: the unit systemd says each one triggers is the one ``triggers`` reads."""
    # the systemd package (make system-deps) ships journald's sockets, at least
    assert VENDOR_SOCKETS, "no socket units in /lib/systemd/system: apt-get install systemd"
    for p in VENDOR_SOCKETS:
        (systemd_user.unit_dir / p.name).write_bytes(p.read_bytes())
    systemd_user.systemctl("daemon-reload", check=True)
    out = systemd_user.systemctl("show", "-p", "Id,Triggers", *(p.name for p in VENDOR_SOCKETS))
    told = {}
    for block in out.stdout.strip().split("\n\n"):
        fields = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        told[fields.get("Id", "")] = fields.get("Triggers", "").split()
    checked = set()
    for p in VENDOR_SOCKETS:
        if told.get(p.name):
            assert unitfile.triggers(p.name, p.read_bytes()) in told[p.name], (p, told[p.name])
            checked.add(p.name)
    assert len(checked) >= len(VENDOR_SOCKETS) // 2, told
    # the case this test is for: a socket naming its service with Service=
    assert "systemd-journald-dev-log.socket" in checked, told
