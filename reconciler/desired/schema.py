"""The shape of the state files, as strict pydantic models (unknown keys are errors).

These models only check shapes and single values; rules that span files (a referenced unit
exists, a node removes a unit its role has) live in ``validate.py``. Enumerations are
``Literal`` rather than enums because strict mode would otherwise refuse plain strings.
"""

from __future__ import annotations

import posixpath
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

UNIT_SUFFIXES = (
    "service", "socket", "target", "timer", "mount", "automount", "path", "slice", "swap",
)  # fmt: skip
_UNIT_RE = re.compile(
    r"^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.(" + "|".join(UNIT_SUFFIXES) + r")$"
)
_ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DURATION_RE = re.compile(
    r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+)ms)?$"
)
MAX_FILE_BYTES = 1024 * 1024
# The writer stages a file as ``.<name>.<8 random chars>.tmp`` next to it: that name must
# still fit in NAME_MAX (255 bytes), so a unit or file name may use at most 241 of them.
NAME_MAX = 255
MAX_NAME_BYTES = NAME_MAX - len("..") - 8 - len(".tmp")
PATH_MAX = 4096  # a path's bytes, Linux's PATH_MAX less room for the node's --root prefix
MAX_PATH_BYTES = PATH_MAX - 1024
MAX_ENTRIES = 1000  # units, files, removals, vars or labels in one list


def _seconds(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError(f"invalid duration {v!r}: write it like 30s, 2m or 1h30m")
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str) and v.strip() and (m := _DURATION_RE.match(v.strip())):
        h, mi, s, ms = (float(x) if x else 0.0 for x in m.groups())
        return h * 3600 + mi * 60 + s + ms / 1000
    raise ValueError(f"invalid duration {v!r}: write it like 30s, 2m or 1h30m")


def parse_duration(v: Any) -> float:
    """'30s', '2m', '1h30m', '500ms' or a number of seconds -> seconds."""
    seconds = _seconds(v)
    if not 0 < seconds <= 86400:
        raise ValueError(f"duration {v!r} must be between 0 and 24h")
    return seconds


def parse_settle(v: Any) -> float:
    """Like ``parse_duration``, but 0 is allowed: it means "active is enough"."""
    seconds = _seconds(v)
    if not 0 <= seconds <= 86400:  # also refuses nan
        raise ValueError(f"settle {v!r} must be 0 or more seconds (at most 24h)")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Settle = Annotated[float, BeforeValidator(parse_settle)]


_DROPIN_RE = re.compile(r"^[A-Za-z0-9:_.\\-]+\.conf$")


def check_unit_name(name: str) -> str:
    for part in name.split("/"):  # a unit, or a drop-in's directory and file
        if len(part.encode()) > MAX_NAME_BYTES:
            raise ValueError(
                f"unit name {part[:40]!r}... is {len(part.encode())} bytes long: at most "
                f"{MAX_NAME_BYTES} (its temp file must fit in {NAME_MAX})"
            )
    unit, sep, conf = name.partition(".d/")
    if sep:  # a drop-in: units/<unit>.d/<name>.conf
        if not _UNIT_RE.match(unit) or not _DROPIN_RE.match(conf) or ".." in conf:
            raise ValueError(
                f"{name!r} is not a valid drop-in: write <unit>.d/<name>.conf, e.g. "
                "docker.service.d/10-flags.conf"
            )
        return name
    if not _UNIT_RE.match(name) or ".." in name:
        raise ValueError(
            f"{name!r} is not a valid systemd unit name: use letters, digits and ':_.-@', "
            f"no '/', ending in .{', .'.join(UNIT_SUFFIXES[:3])} or another unit suffix "
            "(or a drop-in <unit>.d/<name>.conf)"
        )
    return name


def check_abs_path(p: str) -> str:
    if "\x00" in p:
        raise ValueError(f"{p!r} contains a NUL byte: remove it")
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in p):
        raise ValueError(f"{p!r} contains a control character (a newline, a tab...): remove it")
    size = len(p.encode())
    if size > MAX_PATH_BYTES:
        raise ValueError(f"path {p[:40]!r}... is {size} bytes long: at most {MAX_PATH_BYTES}")
    for part in p.split("/"):
        if len(part.encode()) > MAX_NAME_BYTES:
            raise ValueError(
                f"path component {part[:40]!r}... is {len(part.encode())} bytes long: at most "
                f"{MAX_NAME_BYTES} (its temp file must fit in {NAME_MAX})"
            )
    if not p.startswith("/") or posixpath.normpath(p) != p or p.startswith("//") or p == "/":
        raise ValueError(
            f"{p!r} is not an absolute normalised path: write it like /etc/app/config "
            f"(starting with '/', no '..', '.', '//' or trailing '/')"
        )
    return p


def check_mode(v: str) -> str:
    """A quoted octal file mode ("0644", "755")."""
    if not re.match(r"^0?[0-7]{3,4}$", v) or int(v, 8) > 0o7777:
        raise ValueError(f'mode {v!r} is not an octal file mode: write it like "0644"')
    return v


def check_cluster_name(v: str) -> str:
    if not _NAME_RE.match(v):
        raise ValueError(f"{v!r} is not a valid cluster name: use a-z, 0-9 and '-' (max 63)")
    return v


def check_managers(v: int) -> int:
    if v not in (1, 3, 5):
        raise ValueError(
            f"managers must be 1, 3 or 5 (an odd number keeps etcd and swarm quorum), not {v}"
        )
    return v


# Fields checked the same way wherever they appear (state/ and cloudconfig params alike)
UnitNameField = Annotated[str, AfterValidator(check_unit_name)]
AbsPath = Annotated[str, AfterValidator(check_abs_path)]
Mode = Annotated[str, AfterValidator(check_mode)]
ClusterName = Annotated[str, AfterValidator(check_cluster_name)]
Managers = Annotated[int, AfterValidator(check_managers)]


class StrictModel(BaseModel):
    """Every state and params file: strict types, unknown keys are errors."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class Rollout(StrictModel):
    max_unavailable: int = Field(default=1, ge=1, le=MAX_ENTRIES)


class NotifyEntry(StrictModel):
    type: Literal["slack", "webhook"]
    url_env: str | None = None
    url_file: str | None = None
    channel: str = ""
    min_severity: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _one_source(self) -> NotifyEntry:
        if (self.url_env is None) == (self.url_file is None):
            raise ValueError(
                "give exactly one of url_env or url_file (the URL itself stays on the node, "
                "never in git)"
            )
        if self.url_file is not None:
            check_abs_path(self.url_file)
        return self


class ClusterFile(StrictModel):
    name: ClusterName
    managers: Managers
    prefix: str = "/swarmkeeper"
    rollout: Rollout = Rollout()
    vars: dict[str, str] = Field(default={}, max_length=MAX_ENTRIES)
    notify: list[NotifyEntry] = Field(default=[], max_length=20)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not v.startswith("/") or v.endswith("/") or "//" in v or " " in v:
            raise ValueError(
                f"prefix {v!r} must start with '/' and not end with '/', e.g. /swarmkeeper"
            )
        return v

    @field_validator("vars")
    @classmethod
    def _vars(cls, v: dict[str, str]) -> dict[str, str]:
        for k, val in v.items():
            if not _ENV_KEY_RE.match(k):
                raise ValueError(f"vars key {k!r} is not a valid environment variable name")
            if "\n" in val:
                raise ValueError(f"vars value of {k!r} must be a single line")
        return v


class CheckEntry(StrictModel):
    http: str | None = None
    tcp: str | None = None
    unit_active: bool | None = None
    expect_json: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one(self) -> CheckEntry:
        given = [k for k in ("http", "tcp", "unit_active") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of http, tcp or unit_active")
        if self.expect_json is not None and self.http is None:
            raise ValueError("expect_json only goes with an http check")
        if self.tcp is not None and not re.match(r"^[^\s:]+:\d{1,5}$", self.tcp):
            raise ValueError(f"tcp check {self.tcp!r} must look like 127.0.0.1:8200")
        if self.http is not None and not self.http.startswith(("http://", "https://")):
            raise ValueError(f"http check {self.http!r} must be an http:// or https:// URL")
        return self


class RegisterEntry(StrictModel):
    name: str
    port: int = Field(ge=1, le=65535)
    check: CheckEntry
    interval: Duration = 15.0

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"service name {v!r}: use a-z, 0-9 and '-'")
        return v


class UnitEntry(StrictModel):
    name: UnitNameField
    on_change: Literal["restart", "reload", "ignore"] = "restart"
    enable: bool | None = None
    timeout: Duration = 30.0
    # Like Kubernetes' minReadySeconds: how long a (re)started unit without a readiness
    # protocol must stay active before the change counts as healthy. None: the default.
    settle: Settle | None = None
    # "register" would shadow ABCMeta.register on the model class
    registration: RegisterEntry | None = Field(default=None, alias="register")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, v: Any) -> Any:
        return {"name": v} if isinstance(v, str) else v

    @model_validator(mode="after")
    def _settle_within_timeout(self) -> UnitEntry:
        if self.settle is not None and self.settle > self.timeout:
            raise ValueError(
                f"settle ({self.settle:g}s) is longer than timeout ({self.timeout:g}s): the "
                "health gate gives up after timeout; raise timeout or lower settle"
            )
        return self


class FileEntry(StrictModel):
    path: AbsPath
    source: str | None = None
    content: str | None = None
    mode: Mode = "0644"

    @model_validator(mode="after")
    def _one(self) -> FileEntry:
        if (self.source is None) == (self.content is None):
            raise ValueError("give exactly one of source (a file under files/) or content")
        if self.source is not None:
            norm = posixpath.normpath(self.source)
            if not norm.startswith("files/") or norm != self.source:
                raise ValueError(
                    f"source {self.source!r} must be a normalised path under files/, "
                    "e.g. files/extra.env"
                )
        if self.content is not None and len(self.content.encode()) > MAX_FILE_BYTES:
            raise ValueError(f"content is larger than {MAX_FILE_BYTES} bytes")
        return self


class RoleFile(StrictModel):
    units: list[UnitEntry] = Field(default=[], max_length=MAX_ENTRIES)
    files: list[FileEntry] = Field(default=[], max_length=MAX_ENTRIES)


class NodeFile(StrictModel):
    role: Literal["manager", "worker"] | None = None
    units_add: list[UnitEntry] = Field(default=[], max_length=MAX_ENTRIES)
    units_remove: list[str] = Field(default=[], max_length=MAX_ENTRIES)
    paused: bool = False
    labels: dict[str, str] = Field(default={}, max_length=MAX_ENTRIES)
