"""The operator config: named contexts, so etcd flags are not typed again for every command.

``$SWARMKEEPER_CONFIG``, else ``$XDG_CONFIG_HOME/swarmkeeper/config.yaml``, else
``~/.config/swarmkeeper/config.yaml``::

    current-context: lab
    contexts:
      lab:
        etcd: [10.0.0.11:2379, 10.0.0.12:2379]   # or "a:2379,b:2379"
        prefix: /lab
        ca: ~/.config/swarmkeeper/lab/ca.pem     # ca / cert / key turn TLS on
        cert: ~/.config/swarmkeeper/lab/client.pem
        key: ~/.config/swarmkeeper/lab/client-key.pem
        user: operator                           # password only from the environment
        repo: ~/src/lab-state                    # default --repo

The context used is ``--context NAME``, else ``$SWARMKEEPER_CONTEXT``, else
``current-context``. A value is taken from, in order: the flag, its ``$SWARMKEEPER_*``
variable, the context, the built-in default. Reading is pure given the file's bytes; a bad
file is reported as ``path:line: what is wrong``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from reconciler.errors import InvalidDesiredState, Problem, UsageError

FIELDS = ("etcd", "prefix", "ca", "cert", "key", "user", "repo")


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    path: str
    current: str
    contexts: Mapping[str, Mapping[str, str]]

    def context(self, name: str | None) -> tuple[str, Mapping[str, str]]:
        """The named (or current) context; ('', {}) when there is none to use."""
        chosen = name or self.current
        if not chosen:
            return "", {}
        if chosen not in self.contexts:
            known = ", ".join(sorted(self.contexts)) or "none"
            raise UsageError(f"{self.path}: no context {chosen!r} (known: {known})")
        return chosen, self.contexts[chosen]


EMPTY = OperatorConfig(path="", current="", contexts=MappingProxyType({}))


def config_path() -> Path:
    if os.environ.get("SWARMKEEPER_CONFIG"):
        return Path(os.environ["SWARMKEEPER_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "swarmkeeper" / "config.yaml"


def parse(path: str, data: bytes) -> OperatorConfig:
    """Pure: the config in ``data``, or InvalidDesiredState listing every problem."""
    from reconciler.desired.yamlpos import load_yaml

    doc, pos, problems = load_yaml(path, data)
    if problems:
        raise InvalidDesiredState(problems)
    if doc is None:
        return OperatorConfig(path, "", MappingProxyType({}))
    out: list[Problem] = []

    def bad(loc: tuple[str, ...], msg: str) -> None:
        out.append(Problem(path, pos.line(loc), msg))

    if not isinstance(doc, dict):
        raise InvalidDesiredState([Problem(path, 1, "must be a mapping with `contexts:`")])
    for k in doc:
        if k not in ("current-context", "contexts"):
            bad((k,), f"unknown key {k!r}: the keys are current-context and contexts")
    contexts: dict[str, Mapping[str, str]] = {}
    raw = doc.get("contexts") or {}
    if not isinstance(raw, dict):
        bad(("contexts",), "contexts must be a mapping of name -> settings")
        raw = {}
    for name, ctx in raw.items():
        loc = ("contexts", str(name))
        if not isinstance(ctx, dict):
            bad(loc, f"context {name!r} must be a mapping of {', '.join(FIELDS)}")
            continue
        fields: dict[str, str] = {}
        for k, v in ctx.items():
            if k not in FIELDS:
                bad((*loc, str(k)), f"unknown key {k!r}: use one of {', '.join(FIELDS)}")
            elif k == "etcd" and isinstance(v, list) and all(isinstance(e, str) for e in v):
                fields[k] = ",".join(v)
            elif isinstance(v, str) and v:
                fields[k] = os.path.expanduser(v) if k in ("ca", "cert", "key", "repo") else v
            else:
                bad((*loc, str(k)), f"{k} must be a non-empty string"
                    + (" or a list of HOST:PORT" if k == "etcd" else ""))  # fmt: skip
        contexts[str(name)] = MappingProxyType(fields)
    current = doc.get("current-context") or ""
    if not isinstance(current, str):
        bad(("current-context",), "current-context must be a context name")
        current = ""
    elif current and current not in contexts:
        bad(("current-context",), f"current-context {current!r} is not under contexts:")
    if out:
        raise InvalidDesiredState(out)
    return OperatorConfig(path, current, MappingProxyType(contexts))


def load() -> OperatorConfig:
    p = config_path()
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        return EMPTY
    except OSError as e:
        raise UsageError(f"cannot read {p}: {e.strerror}") from None
    return parse(str(p), data)


def selected(args: Any) -> tuple[str, Mapping[str, str]]:
    """The context this command runs in: (name, settings)."""
    name = getattr(args, "context", None) or os.environ.get("SWARMKEEPER_CONTEXT") or None
    cfg = load()
    if name and cfg is EMPTY:
        raise UsageError(f"--context {name}: there is no operator config at {config_path()}")
    return cfg.context(name)


def pick(flag: Any, env: str, ctx: Mapping[str, str], field: str, default: Any = None) -> Any:
    """Flag, then environment variable, then context, then default."""
    if flag is not None:
        return flag
    if os.environ.get(env):
        return os.environ[env]
    return ctx.get(field, default)
