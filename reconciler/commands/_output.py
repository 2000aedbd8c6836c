"""How commands print: exit codes, JSON documents, colour.

Every ``--json`` document is one object with ``"apiVersion": "swarmkeeper/v1"`` and a
``kind``; its shape is described by ``schemas/<kind>.json`` (tests validate real outputs
against them), so a script can check what it reads. Fields are only ever added within v1.

Colour follows the common conventions: ``--color always|never`` wins, ``auto`` (the default)
colours only a terminal and is switched off by a non-empty ``NO_COLOR``
(https://no-color.org).
"""

from __future__ import annotations

import json
import os
import sys
from enum import IntEnum, StrEnum
from typing import Any, TextIO

API_VERSION = "swarmkeeper/v1"


class ExitCode(IntEnum):
    """What a command's exit status means (README: "Exit status")."""

    OK = 0
    ERROR = 1  # bad input: invalid state tree, unknown revision, wrong flag value
    PENDING = 2  # plan: changes pending (argparse also exits 2 on an unknown flag)
    NOT_CONVERGED = 3  # status/wait: some node is behind, halted, degraded, rejected or dead
    UNAVAILABLE = 4  # etcd or the git remote did not answer, or another apply holds the node
    TIMEOUT = 5  # wait: the deadline passed before every node converged
    BROKEN_PIPE = 141  # the reader went away (`| head`): 128 + SIGPIPE, as a shell reports


class ColorMode(StrEnum):
    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


def use_color(mode: str, stream: TextIO | None = None) -> bool:
    """Pure enough to test: the decision for ``mode`` on ``stream`` under this environment."""
    m = ColorMode(mode)
    if m is ColorMode.ALWAYS:
        return True
    if m is ColorMode.NEVER or os.environ.get("NO_COLOR"):
        return False
    s = stream if stream is not None else sys.stdout
    return bool(getattr(s, "isatty", lambda: False)())


_SGR = {"green": "32", "yellow": "33", "red": "31", "bold": "1", "dim": "2"}

# a state's colour in tables: good green, in motion yellow, needs a human red
STATE_COLORS = {
    "converged": "green",
    "applying": "yellow",
    "behind": "yellow",
    "waiting": "yellow",
    "idle": "dim",
    "paused": "yellow",
    "degraded": "red",
    "rejected": "red",
    "dead": "red",
    "unknown": "red",
}


class Painter:
    """Wraps text in ANSI colour when colour is on; the identity otherwise."""

    __slots__ = ("enabled",)

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __call__(self, text: str, color: str) -> str:
        code = _SGR.get(color)
        if not self.enabled or code is None or not text:
            return text
        return f"\x1b[{code}m{text}\x1b[0m"

    def state(self, text: str, state: str) -> str:
        return self(text, STATE_COLORS.get(state, ""))


def painter(args: Any) -> Painter:
    return Painter(use_color(getattr(args, "color", None) or "auto"))


def document(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """A JSON document: the version and kind first, then the body."""
    return {"apiVersion": API_VERSION, "kind": kind, **body}


def print_json(kind: str, body: dict[str, Any], *, indent: int | None = None) -> None:
    # apiVersion and kind stay first, so `head -c` or a human sees what the document is
    print(json.dumps(document(kind, dict(sorted(body.items()))), indent=indent), flush=True)


def wants_json(args: Any) -> bool:
    return bool(getattr(args, "json", False))


def visible_len(text: str) -> int:
    """Width of ``text`` on a terminal (ANSI colour codes take none)."""
    n, i = 0, 0
    while i < len(text):
        if text[i] == "\x1b":
            j = text.find("m", i)
            i = j + 1 if j >= 0 else len(text)
            continue
        n += 1
        i += 1
    return n


def table(rows: list[list[str]]) -> list[str]:
    """Columns padded to their widest cell (colour codes do not count), right-trimmed."""
    if not rows:
        return []
    widths = [max(visible_len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for r in rows:
        cells = [c + " " * (w - visible_len(c)) for c, w in zip(r, widths, strict=True)]
        out.append("  ".join(cells).rstrip())
    return out
