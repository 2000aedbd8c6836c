"""Every command example in README.md and docs/*.md runs as written, so docs and behaviour
cannot drift apart.

Fenced ``sh`` and ``console`` blocks are examples. The words after the language say what a
block needs beyond this machine, and so whether it runs here:

- (nothing): it runs offline, in a scratch copy of this repository with ``swarmkeeper`` on
  ``PATH``; the blocks of one file share that directory, in order (one may use a file an
  earlier one wrote);
- ``cluster``: a running etcd and agents; ``host``: root on a real host or the network;
  ``edit``: the reader's own values in a file first. Those are not run, but every
  ``swarmkeeper`` command in them must still parse (flags, actions, choices).

A command's exit status is 0 unless its line ends in ``# exit N``. In a ``console`` block,
``$ command`` lines are followed by their expected output, where ``…`` stands for any text;
in an ``sh`` block a ``# prints: TEXT`` comment says what stdout contains.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NEEDS = {"cluster", "host", "edit"}
FENCE = re.compile(r"^```(sh|console)((?: [\w-]+)*)\s*$")


@dataclass(frozen=True, slots=True)
class Command:
    line: int
    text: str  # the shell text, continuation lines joined
    exit: int
    output: tuple[str, ...]  # console: the expected lines; sh: the "# prints:" texts


@dataclass(frozen=True, slots=True)
class Block:
    path: Path
    line: int
    lang: str
    needs: frozenset[str]
    commands: tuple[Command, ...]

    @property
    def runs(self) -> bool:
        return not self.needs


def _command(line: int, text: str, output: list[str]) -> Command:
    m = re.search(r"#\s*exit (\d+)\s*$", text)
    return Command(line, text, int(m.group(1)) if m else 0, tuple(output))


def parse_blocks(path: Path) -> list[Block]:
    """Pure but for reading ``path``: its example blocks, in order."""
    lines = path.read_text().splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        lang, words = m.group(1), frozenset(m.group(2).split())
        assert words <= NEEDS, f"{path.name}:{i + 1}: unknown marker(s) {sorted(words - NEEDS)}"
        start, i = i + 1, i + 1
        body: list[tuple[int, str]] = []
        while not lines[i].startswith("```"):
            body.append((i + 1, lines[i]))
            i += 1
        out.append(Block(path, start, lang, words, tuple(_commands(lang, body))))
        i += 1
    return out


def _commands(lang: str, body: list[tuple[int, str]]) -> list[Command]:
    cmds: list[Command] = []
    cur: tuple[int, str] | None = None
    output: list[str] = []
    for n, raw in body:
        if lang == "console" and not raw.startswith("$ ") and cur is None and cmds:
            cmds[-1] = Command(cmds[-1].line, cmds[-1].text, cmds[-1].exit,
                               (*cmds[-1].output, raw))  # fmt: skip
            continue
        text = raw[2:] if lang == "console" and raw.startswith("$ ") else raw
        if cur is not None:
            cur = (cur[0], cur[1][:-1] + " " + text.strip())
        elif lang == "sh" and text.lstrip().startswith("#"):
            said = re.match(r"\s*#\s*prints:\s*(.*?)\s*(--.*)?$", text)
            if said and cmds:
                last = cmds[-1]
                cmds[-1] = Command(last.line, last.text, last.exit, (*last.output, said.group(1)))
            continue
        elif not text.strip():
            continue
        else:
            cur = (n, text)
        if not cur[1].endswith("\\"):
            cmds.append(_command(cur[0], cur[1], output))
            cur = None
    return cmds


def _argv(text: str) -> list[str] | None:
    """The arguments of a ``swarmkeeper`` command line (None for other commands)."""
    words = shlex.split(text, comments=True)
    while words and "=" in words[0] and not words[0].startswith("-"):
        words = words[1:]  # VAR=value prefixes
    if not words or words[0] != "swarmkeeper":
        return None
    for i, w in enumerate(words):
        if w in ("|", ">", "&&", ";", "2>&1", ">>"):
            return words[1:i]
    return words[1:]


def shape(lines: tuple[str, ...]) -> str:
    """A regex for expected output: ``…`` is any text; a line of only ``…`` any lines."""
    parts = []
    for want in lines:
        if want.strip() == "…":
            parts.append(r"(?:[^\n]*\n)*[^\n]*")
        else:
            parts.append("[^\n]*".join(re.escape(p) for p in want.split("…")))
    return "\n".join(parts)


@pytest.mark.parametrize(
    ("lines", "text", "ok"),
    [(("ok: …",), "ok: fine", True), (("a", "…", "z"), "a\nb\nc\nz", True),
     (("a", "…", "z"), "a\nz", False), (("x …",), "x 1\ny", False)],
)  # fmt: skip
def test_shape(lines: tuple[str, ...], text: str, ok: bool) -> None:
    assert bool(re.fullmatch(shape(lines), text)) is ok


BLOCKS = [b for p in DOCS for b in parse_blocks(p)]


def _id(b: Block) -> str:
    return f"{b.path.relative_to(ROOT)}:{b.line}"


def test_the_docs_have_examples_of_both_kinds() -> None:
    assert any(b.runs for b in BLOCKS) and any(not b.runs for b in BLOCKS)
    assert any(b.lang == "console" and b.runs for b in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=_id)
def test_every_swarmkeeper_example_parses(block: Block) -> None:
    parser = build_parser()
    for c in block.commands:
        argv = _argv(c.text)
        if argv is None:
            continue
        try:
            parser.parse_args(argv)
        except SystemExit as e:  # argparse's own error (or --help): name the line
            assert e.code == 0, f"{block.path.name}:{c.line}: does not parse: {c.text}"


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> dict[Path, Path]:
    """One scratch directory per doc file: a copy of the repo's state, swarmkeeper on PATH."""
    bindir = tmp_path_factory.mktemp("bin")
    exe = bindir / "swarmkeeper"
    exe.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT}" exec "{sys.executable}" -m reconciler "$@"\n')
    exe.chmod(0o755)
    dirs = {}
    for path in DOCS:
        d = tmp_path_factory.mktemp(path.stem)
        for sub in ("state", "units", "files"):
            shutil.copytree(ROOT / sub, d / sub, symlinks=True)
        git = ["git", "-C", str(d), "-c", "user.name=docs", "-c", "user.email=docs@localhost"]
        for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "docs"]):
            subprocess.run(
                [*git, *args], check=True, capture_output=True
            )  # a clone, as a reader has
        dirs[path] = d
    dirs[Path("bin")] = bindir
    return dirs


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.runs], ids=_id)
def test_offline_examples_run_as_written(block: Block, scratch: dict[Path, Path]) -> None:
    home = scratch[block.path] / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": f"{scratch[Path('bin')]}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home),
           "SWARMKEEPER_CONFIG": "/nonexistent/config.yaml", "NO_COLOR": "1"}  # fmt: skip
    for c in block.commands:
        r = subprocess.run(["bash", "-o", "pipefail", "-c", c.text], capture_output=True,
                           text=True, cwd=scratch[block.path], env=env, timeout=120)  # fmt: skip
        where = f"{block.path.name}:{c.line}: {c.text}"
        assert r.returncode == c.exit, f"{where}: exit {r.returncode}\n{r.stdout}{r.stderr}"
        assert "Traceback" not in r.stderr, where
        if block.lang == "console":
            got = (r.stdout + r.stderr).rstrip("\n")
            assert re.fullmatch(shape(c.output), got), f"{where}: printed\n{got}"
        else:
            for want in c.output:
                assert want in r.stdout, f"{where}: stdout lacks {want!r}:\n{r.stdout}"
