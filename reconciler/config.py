"""The option set shared by ``plan``, ``apply`` and ``agent``: flags, env, a YAML file.

Every option works without a config file. Precedence, per key: command-line flag >
``SWARMKEEPER_<KEY>`` environment variable > ``--config FILE`` (YAML, the same keys with
underscores) > built-in default. ``add_options(parser)`` adds the node options,
``add_agent_options(parser)`` the agent's extra ones (``--etcd``, ``--prefix``, ``--listen``,
``--poll-interval``), and ``load(args)`` resolves everything into one frozen ``Config``.
Any bad value raises ``UsageError`` naming the option and where the value came from.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from reconciler.desired.filespolicy import (
    DEFAULT_ALLOWED_PATHS,
    FilesPolicy,
    ModeBit,
    parse_modes,
    parse_paths,
)
from reconciler.errors import UsageError
from reconciler.models import Role

ENV_PREFIX = "SWARMKEEPER_"
SCOPES = ("system", "user")
SYSTEM_STATE_DIR = Path("/var/lib/swarmkeeper")


@dataclass(frozen=True, slots=True)
class Config:
    repo: str = "."
    branch: str = "main"
    rev: str | None = None
    node: str = ""  # default: the short host name
    role: Role | None = None  # None: from state/nodes/<node>.yaml
    address: str = "127.0.0.1"
    scope: str = "system"
    bus_address: str | None = None  # None: candidate_endpoints' choice for the scope
    state_dir: Path = SYSTEM_STATE_DIR
    unit_dir: Path | None = None  # None: the scope's own (Systemd.unit_dir)
    root: Path | None = None  # prefix for managed file paths (tests, sandboxes)
    config: Path | None = None
    # agent
    etcd: tuple[str, ...] = ("127.0.0.1:2379",)
    prefix: str = "/swarmkeeper"
    listen: str = "127.0.0.1:9469"
    poll_interval: float = 60.0
    # the node's files policy (docs/state-format.md): never taken from git
    files_allow_paths: tuple[str, ...] = DEFAULT_ALLOWED_PATHS
    files_allow_modes: frozenset[ModeBit] = frozenset()

    @property
    def files_policy(self) -> FilesPolicy:
        return FilesPolicy(self.files_allow_paths, self.files_allow_modes)

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Path | Role):
                out[f.name] = str(v)
            elif isinstance(v, frozenset):
                out[f.name] = sorted(v)
            else:
                out[f.name] = list(v) if isinstance(v, tuple) else v
        return out


KEYS = tuple(f.name for f in fields(Config))


# ---------------------------------------------------------------- parsing values


def _host_port(v: str, what: str) -> str:
    host, sep, port = v.strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{what} {v!r} is not HOST:PORT")
    return f"{host}:{int(port)}"


def _etcd(v: object) -> tuple[str, ...]:
    items = v if isinstance(v, list | tuple) else str(v).split(",")
    out = tuple(
        _host_port(str(i).removeprefix("http://"), "endpoint") for i in items if str(i).strip()
    )
    if not out:
        raise ValueError("needs at least one HOST:PORT")
    return out


def _address(v: object) -> str:
    return str(ipaddress.ip_address(str(v).strip()))


def _role(v: object) -> Role:
    try:
        return Role(str(v))
    except ValueError:
        raise ValueError(f"{v!r} is not one of manager, worker") from None


def _scope(v: object) -> str:
    if str(v) not in SCOPES:
        raise ValueError(f"{v!r} is not one of system, user")
    return str(v)


def _bus_address(v: object) -> str:
    text = _str(v).strip()
    if ":" not in text.split(",", 1)[0] or text.startswith(":"):
        raise ValueError(f"{v!r} is not a D-Bus address (e.g. unix:path=/run/systemd/private)")
    return text


def _seconds(v: object) -> float:
    text = str(v).strip()
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    value = None
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix) and text[: -len(suffix)].replace(".", "", 1).isdigit():
            value = float(text[: -len(suffix)]) * scale[suffix]
            break
    if value is None:
        value = float(text)
    if not value > 0:
        raise ValueError("must be > 0")
    return value


def _prefix(v: object) -> str:
    text = str(v).rstrip("/")
    if not text.startswith("/"):
        raise ValueError(f"{v!r} must start with '/'")
    return text


def _str(v: object) -> str:
    if not isinstance(v, str | int | float) or isinstance(v, bool):
        raise ValueError(f"{v!r} is not a string")
    return str(v)


def _path(v: object) -> Path:
    return Path(_str(v)).expanduser()


PARSERS: dict[str, Callable[[Any], object]] = {
    "repo": _str,
    "branch": _str,
    "rev": _str,
    "node": _str,
    "role": _role,
    "address": _address,
    "scope": _scope,
    "bus_address": _bus_address,
    "state_dir": _path,
    "unit_dir": _path,
    "root": _path,
    "config": _path,
    "etcd": _etcd,
    "prefix": _prefix,
    "listen": lambda v: (
        "" if str(v) in ("", "off") else _host_port(str(v), "address")
    ),  # off: no HTTP
    "poll_interval": _seconds,
    "files_allow_paths": parse_paths,
    "files_allow_modes": parse_modes,
}


# ---------------------------------------------------------------- argparse


def add_options(parser: argparse.ArgumentParser) -> None:
    """The node options of ``plan``, ``apply`` and ``agent`` (defaults resolved by load)."""
    g = parser.add_argument_group("node options (also SWARMKEEPER_<KEY> or --config FILE)")
    g.add_argument(
        "--repo",
        metavar="URL_OR_PATH",
        help="state repository: a directory, a git repo or a git URL (default .)",
    )
    g.add_argument("--branch", help="branch to follow when --repo is a git URL (default main)")
    g.add_argument(
        "--rev",
        metavar="REV",
        help="commit to apply (default: the working tree of a directory, the branch head of a URL)",
    )
    g.add_argument("--node", metavar="NAME", help="this node's name (default: the host name)")
    g.add_argument("--role", help="manager or worker (default: from state/nodes/<node>.yaml)")
    g.add_argument(
        "--address", metavar="IP", help="this node's private address (default 127.0.0.1)"
    )
    g.add_argument("--scope", help="systemd manager to drive: system or user (default system)")
    g.add_argument(
        "--bus-address",
        metavar="ADDRESS",
        help="D-Bus address of the systemd manager (default: for root with --scope system, systemd's private socket /run/systemd/private when it exists, else the system bus)",
    )
    g.add_argument(
        "--state-dir",
        metavar="DIR",
        help="inventory and caches (default /var/lib/swarmkeeper, or ~/.local/state/swarmkeeper for --scope user)",
    )
    g.add_argument(
        "--unit-dir", metavar="DIR", help="where unit files go (default: the scope's own)"
    )
    g.add_argument(
        "--root", metavar="DIR", help="prefix for managed file paths, for tests and sandboxes"
    )
    g.add_argument("--config", metavar="FILE", help="YAML file with the same keys (underscores)")
    # a node fact too: the environment file lists the endpoints, so plan and apply take it
    g.add_argument(
        "--etcd", metavar="HOST:PORT[,...]", help="etcd endpoints (default 127.0.0.1:2379)"
    )


def add_agent_options(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("agent options")
    g.add_argument("--prefix", help="etcd key prefix (default /swarmkeeper)")
    g.add_argument(
        "--listen",
        metavar="ADDR:PORT",
        help="HTTP address for /healthz, /metrics, hooks (default 127.0.0.1:9469)",
    )
    g.add_argument(
        "--poll-interval", metavar="SECONDS", help="fallback git poll period (default 60)"
    )
    g.add_argument(
        "--files-allow-paths",
        metavar="PATH[,PREFIX/...]",
        help="paths a revision's files: may write; a prefix ends in '/' (default: "
        + ",".join(DEFAULT_ALLOWED_PATHS)
        + ")",
    )
    g.add_argument(
        "--files-allow-modes",
        metavar="BIT[,...]",
        help="file mode bits a revision may set: setuid, setgid, world-writable (default: none)",
    )


# ---------------------------------------------------------------- resolving


def _read_file(path: Path) -> dict[str, object]:
    import yaml

    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as e:
        raise UsageError(f"--config {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise UsageError(f"--config {path}: not valid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise UsageError(f"--config {path}: expected a mapping of option: value")
    out: dict[str, object] = {}
    for key, value in doc.items():
        k = str(key).replace("-", "_")
        if k not in KEYS or k == "config":
            hint = difflib.get_close_matches(k, KEYS, 1)
            raise UsageError(
                f"--config {path}: unknown key {key!r}"
                + (f" (did you mean {hint[0]!r}?)" if hint else "")
            )
        out[k] = value
    return out


def _parse(key: str, value: object, source: str) -> object:
    try:
        return PARSERS[key](value)
    except (ValueError, TypeError) as e:
        raise UsageError(f"{source}: {e}") from None


def load(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Config:
    """Resolve every option: flag > SWARMKEEPER_<KEY> > --config file > default."""
    env = os.environ if environ is None else environ
    flag = {k: getattr(args, k, None) for k in KEYS}
    cfg_source = flag["config"] or env.get(ENV_PREFIX + "CONFIG")
    file_values = _read_file(Path(str(cfg_source)).expanduser()) if cfg_source else {}
    values: dict[str, object] = {}
    for key in KEYS:
        option = "--" + key.replace("_", "-")
        env_name = ENV_PREFIX + key.upper()
        if flag[key] is not None:
            values[key] = _parse(key, flag[key], option)
        elif env.get(env_name):
            values[key] = _parse(key, env[env_name], f"{env_name}")
        elif key in file_values and file_values[key] is not None:
            values[key] = _parse(key, file_values[key], f"--config {cfg_source}: {key}")
    values.setdefault("node", socket.gethostname().split(".")[0])
    scope = str(values.get("scope", "system"))
    if "state_dir" not in values and scope == "user":
        base = env.get("XDG_STATE_HOME") or str(
            Path(env.get("HOME", "~")).expanduser() / ".local/state"
        )
        values["state_dir"] = Path(base) / "swarmkeeper"
    if not str(values["node"]).strip() or "/" in str(values["node"]):
        raise UsageError(f"--node: {values['node']!r} is not a node name")
    return Config(**values)  # type: ignore[arg-type]
