"""Unit files systemd cannot parse are refused by ``validate``, line by line, like systemd.

Each case is also given to ``systemd-analyze verify``: it must complain about the same line
(systemd ignores a line without ``=`` and an assignment before any section with a warning,
and refuses a broken section header; all three are mistakes we refuse outright).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.desired import RepoTree, validate_tree
from reconciler.desired.validate import syntax_problems
from tests.test_validate import GOOD

ANALYZE = shutil.which("systemd-analyze")

CASES = [
    (
        "line without =",
        b"[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\nRestart\n",
        5,
        "Missing '='",
    ),
    (
        "section header without ]",
        b"[Unit]\nDescription=x\n[Service\nExecStart=/bin/true\n",
        3,
        "Invalid section header",
    ),
    (
        "assignment before any section",
        b"Description=x\n[Service]\nExecStart=/bin/true\n",
        1,
        "Assignment outside of section",
    ),
]


def _problems(files: dict[str, bytes]) -> list[str]:
    return [str(p) for p in validate_tree(RepoTree(files={**GOOD, **files}, links={}))]


@pytest.mark.parametrize(("content", "line", "systemd_says"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_unparsable_unit_files_are_refused_on_the_line_systemd_names(
    tmp_path: Path, content: bytes, line: int, systemd_says: str
) -> None:
    probs = _problems({"units/a.service": content})
    assert len(probs) == 1, probs
    assert probs[0].startswith(f"units/a.service:{line}: "), probs
    assert systemd_says in probs[0]
    # systemd-analyze comes with the systemd package, which make system-deps installs
    assert ANALYZE is not None, "systemd-analyze is missing: apt-get install systemd"
    f = tmp_path / "a.service"
    f.write_bytes(content)
    out = subprocess.run(
        [ANALYZE, "verify", "--man=no", str(f)], capture_output=True, text=True, timeout=30
    )
    said = re.findall(rf"{re.escape(str(f))}:(\d+): (.*)", out.stderr)
    assert (str(line), systemd_says) in [(n, m[: len(systemd_says)]) for n, m in said], out.stderr


def test_continuations_comments_and_empty_lines_are_fine() -> None:
    ok = (
        b"# comment\n; another\n\n[Unit]\nDescription=a \\\n  long one\n"
        b"[Service]\nExecStart=/bin/sh -c \\\n# inside\n  'true'\n  \n"
    )
    assert _problems({"units/a.service": ok}) == []


def test_a_bare_template_may_be_listed() -> None:
    roles = b"units: [a.service, b.service, x@.service, x@one.service]\n"
    probs = _problems(
        {
            "state/roles/manager.yaml": roles,
            "units/x@.service": b"[Service]\nExecStart=/bin/echo %i\n",
        }
    )
    assert probs == []


_KEY = st.sampled_from(["Description", "ExecStart", "Type", "WantedBy", "X-Note", "After"])
_VALUE = st.text(alphabet="abc019/ .=-\x1e\x85\u2028", max_size=12).map(str.strip)
_LINE = st.one_of(
    st.tuples(_KEY, _VALUE).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.just(""),
    st.tuples(st.sampled_from("#;"), _VALUE).map("".join),
)
_SECTION = st.sampled_from(["Unit", "Service", "Socket", "Install", "X-Custom"])


@st.composite
def _units(draw: st.DrawFn) -> list[str]:
    lines: list[str] = []
    for section in draw(st.lists(_SECTION, min_size=1, max_size=4)):
        lines.append(f"[{section}]")
        lines += draw(st.lists(_LINE, max_size=6))
    return lines


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=_units(),
    bad=st.sampled_from(["Restart", "[Service", "no equals sign"]),
    at=st.integers(1, 30),
)
def test_well_formed_units_pass_and_one_bad_line_is_named(
    lines: list[str], bad: str, at: int
) -> None:
    assert syntax_problems("\n".join(lines)) == []
    where = min(at, len(lines))  # after the first section header: never "outside"
    broken = [*lines[:where], bad, *lines[where:]]
    assert [no for no, _ in syntax_problems("\n".join(broken))] == [where + 1]
