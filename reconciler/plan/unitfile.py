"""A small, pure reader of systemd unit-file syntax, for the planner's decisions.

The planner needs two facts from a unit's bytes: does it have an ``[Install]`` section (so
``enable`` defaults to true), and which absolute paths it uses through ``EnvironmentFile=``,
``ExecStart*=`` and ``ExecReload=`` (so a change to a managed file restarts exactly the units
that read it). This follows systemd's own rules closely enough for that: ``#``/``;`` comments,
``[Section]`` headers, ``Key=Value`` with surrounding whitespace trimmed, and a trailing
backslash joining the next line with a space (comment lines inside a continuation are skipped,
as systemd does). Nothing here touches the disk.
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from functools import lru_cache

# Keys whose arguments may name a file the unit reads when it (re)starts or reloads.
EXEC_KEYS = frozenset({"ExecStart", "ExecStartPre", "ExecStartPost", "ExecCondition", "ExecReload"})
# systemd's special executable prefixes ("@", "-", ":", "+", "!", "!!").
_EXEC_PREFIX = "@-:+!"


@dataclass(frozen=True, slots=True)
class Directive:
    section: str
    key: str
    value: str
    line: int  # 1-based line where the directive starts


@dataclass(frozen=True, slots=True)
class UnitFile:
    directives: tuple[Directive, ...]

    def values(self, section: str, key: str) -> tuple[str, ...]:
        return tuple(d.value for d in self.directives if d.section == section and d.key == key)


_LINES = re.compile(r"\r\n|[\r\n\0]")


def _text(content: bytes | str) -> str:
    if isinstance(content, bytes):
        return content.decode("utf-8", errors="replace")
    return content


def parse(content: bytes | str) -> UnitFile:
    """Every directive in file order; malformed lines are skipped, never raised on."""
    out: list[Directive] = []
    section = ""
    pending: list[str] = []  # pieces of a continued directive
    start = 0
    # systemd ends a line at \n, \r, \r\n or NUL only (str.splitlines knows more)
    for no, raw in enumerate(_LINES.split(_text(content)), start=1):
        line = raw.strip()
        if pending:
            if line.startswith(("#", ";")):
                continue
            if line.endswith("\\"):
                pending.append(line[:-1])
                continue
            pending.append(line)
            _add(out, section, " ".join(pending), start)
            pending = []
            continue
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if line.endswith("\\"):
            pending = [line[:-1]]
            start = no
            continue
        _add(out, section, line, no)
    if pending:
        _add(out, section, " ".join(pending), start)
    return UnitFile(tuple(out))


def _add(out: list[Directive], section: str, line: str, no: int) -> None:
    key, sep, value = line.partition("=")
    key = key.strip()
    if not sep or not key or not section:
        return
    out.append(Directive(section, key, value.strip(), no))


@lru_cache(maxsize=4096)  # the planner asks again every pass for the same unit bytes
def has_install(content: bytes | str) -> bool:
    """True when the unit has an ``[Install]`` section with at least one directive."""
    return any(d.section == "Install" for d in parse(content).directives)


# the section of each triggering unit type, and the key naming the unit it activates
TRIGGER_SECTIONS = {"timer": ("Timer", "Unit"), "socket": ("Socket", "Service"),
                    "path": ("Path", "Unit")}  # fmt: skip


def triggers(name: str, content: bytes | str) -> str | None:
    """The unit a .timer/.path (``Unit=``) or .socket (``Service=``) unit activates; by
    default the .service of the same name (a template instance per connection for a socket
    with ``Accept=yes``)."""
    stem, _, kind = name.rpartition(".")
    if kind not in TRIGGER_SECTIONS:
        return None
    section, key = TRIGGER_SECTIONS[kind]
    explicit = parse(content).values(section, key)
    if explicit:
        return explicit[-1]
    if kind == "socket" and any(v == "yes" for v in parse(content).values("Socket", "Accept")):
        return f"{stem}@.service"  # one instance per connection, from the template
    return f"{stem}.service"


@lru_cache(maxsize=4096)
def can_reload(content: bytes | str) -> bool:
    """True when the unit says how to reload (``ExecReload=`` with a command)."""
    return any(d.key == "ExecReload" and d.value for d in parse(content).directives)


def _split(value: str) -> list[str]:
    try:
        return shlex.split(value, comments=False, posix=True)
    except ValueError:  # unbalanced quotes: systemd would reject it; be lenient here
        return value.split()


def _as_path(token: str) -> str | None:
    token = token.lstrip(_EXEC_PREFIX)
    if not token.startswith("/"):
        # "--config=/etc/x.conf" style arguments
        _, sep, rest = token.partition("=")
        if not sep or not rest.startswith("/"):
            return None
        token = rest
    if "$" in token or "%" in token:
        return None  # expanded by systemd at run time: not a fixed path we manage
    return posixpath.normpath(token)


@lru_cache(maxsize=4096)
def referenced_paths(content: bytes | str) -> frozenset[str]:
    """Absolute paths the unit reads through EnvironmentFile=, ExecStart*= and ExecReload=."""
    paths: set[str] = set()
    for d in parse(content).directives:
        if d.key == "EnvironmentFile":
            value = d.value.lstrip("-").strip()
            p = _as_path(value) if value.startswith("/") else None
            if p:
                paths.add(p)
        elif d.key in EXEC_KEYS:
            for token in _split(d.value):
                p = _as_path(token)
                if p:
                    paths.add(p)
    return frozenset(paths)


def dropin_parent(name: str) -> str | None:
    """The unit a first-class drop-in configures (``x.service.d/10-a.conf`` -> ``x.service``);
    None for a unit name."""
    unit, sep, conf = name.partition(".d/")
    return unit if sep and conf.endswith(".conf") else None


def dropin_unit(path: str) -> str | None:
    """The unit a drop-in file belongs to (``.../x.service.d/10-a.conf`` -> ``x.service``)."""
    parent = posixpath.basename(posixpath.dirname(path))
    if path.endswith(".conf") and parent.endswith(".d") and "." in parent[:-2]:
        return parent[:-2]
    return None


@lru_cache(maxsize=4096)
def service_type(content: bytes | str) -> tuple[str, bool]:
    """``Type=`` and ``RemainAfterExit=`` of a service file, as systemd would default them."""
    f = parse(content)
    types = f.values("Service", "Type")
    remain = f.values("Service", "RemainAfterExit")
    stype = types[-1] if types else ("simple" if f.values("Service", "ExecStart") else "oneshot")
    return stype, bool(remain) and remain[-1].lower() in ("yes", "true", "1", "on")
