"""``params.yml``: the provisioning parameters, validated with ``path:line:`` problems.

The keys ``cluster``, ``etcd``, ``repo``, ``agent``, ``prefix``, ``ssh_authorized_keys`` and
``slack`` are a contract; the others are additions with safe defaults. Shapes are
checked by strict pydantic models (unknown keys and wrong types are errors); rules that span
keys (the static list must name exactly ``cluster.managers`` addresses, Fedora CoreOS needs a
FleetLock server for coordinated reboots) are checked afterwards with the YAML positions, so
every problem is reported at once with its line.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Annotated, Literal

import pydantic
from pydantic import AfterValidator, Field, field_validator, model_validator

from reconciler.desired.schema import (
    AbsPath,
    ClusterName,
    Managers,
    Mode,
    StrictModel,
    check_abs_path,
)
from reconciler.desired.yamlpos import Positions, load_yaml, pydantic_problems
from reconciler.errors import InvalidDesiredState, Problem

DEFAULT_ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.17"
DEFAULT_SLACK_FILE = "/etc/swarmkeeper/slack-url"
# Files the generator writes itself; params.files may not replace them.
RESERVED_PATHS = frozenset(
    f"/etc/swarmkeeper/{n}"
    for n in (
        "bootstrap.conf", "node-facts.sh", "agent.base.yaml", "agent.env", "agent.yaml",
        "node.env", "etcd-bootstrap.env", "locksmithd.env", "slack-url",
    )
) | {"/etc/flatcar/update.conf", "/etc/zincati/config.d/55-swarmkeeper-updates.toml"}  # fmt: skip
MAX_FILE_BYTES = 256 * 1024  # user-data limits are small (EC2: 16 KiB gzip'd, GCE: 256 KiB)

_DISCOVERY_RE = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]+)?/[A-Za-z0-9/_.-]+$")
_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?$")
_IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$")
_BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]*$")
_PREFIX_RE = re.compile(r"^/[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")
_VOLUME_RE = re.compile(r"^/[A-Za-z0-9._/-]*:/[A-Za-z0-9._/-]*(:(ro|rw))?$")


RoleName = Literal["manager", "worker"]
_ALL_ROLES: tuple[RoleName, ...] = ("manager", "worker")


def _check_image(v: str) -> str:
    if not _IMAGE_RE.match(v):
        raise ValueError(f"{v!r} is not an image reference: write it like registry/name:tag")
    return v


Image = Annotated[str, AfterValidator(_check_image)]


class ClusterParams(StrictModel):
    # the same types as state/cluster.yaml's, so params and state can never disagree
    name: ClusterName
    managers: Managers


class EtcdParams(StrictModel):
    discovery: str | None = None
    static: list[str] | None = None
    image: Image = DEFAULT_ETCD_IMAGE
    client_port: int = Field(default=2379, ge=1, le=65535)
    peer_port: int = Field(default=2380, ge=1, le=65535)

    @field_validator("discovery")
    @classmethod
    def _discovery(cls, v: str | None) -> str | None:
        if v is not None and not _DISCOVERY_RE.match(v):
            raise ValueError(
                f"{v!r} is not a discovery URL: write it like https://discovery.etcd.io/<token> "
                "(get one with `swarmkeeper cloudconfig discovery-url --size N`)"
            )
        return v

    @field_validator("static")
    @classmethod
    def _static(cls, v: list[str] | None) -> list[str] | None:
        for a in v or []:
            try:
                ipaddress.IPv4Address(a)
            except ValueError:
                raise ValueError(
                    f"{a!r} is not an IPv4 address: list the managers' private addresses"
                ) from None
        if v is not None and len(set(v)) != len(v):
            raise ValueError("an address is listed twice")
        return v


class RepoParams(StrictModel):
    url: str = Field(min_length=1)
    branch: str = "main"

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if any(c.isspace() for c in v) or "'" in v:
            raise ValueError(f"{v!r} is not a git URL: no spaces or quotes")
        return v

    @field_validator("branch")
    @classmethod
    def _branch(cls, v: str) -> str:
        if not _BRANCH_RE.match(v) or ".." in v:
            raise ValueError(f"{v!r} is not a branch name")
        return v


class AgentParams(StrictModel):
    image: Image
    runtime: Literal["docker", "podman"] = "docker"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    extra_volumes: list[str] = Field(default_factory=list)
    # the node's files policy (docs/state-format.md); None: the agent's default
    files_allow_paths: list[str] | None = None
    files_allow_modes: list[Literal["setuid", "setgid", "world-writable"]] = Field(
        default_factory=list
    )

    @field_validator("files_allow_paths")
    @classmethod
    def _allow_paths(cls, v: list[str] | None) -> list[str] | None:
        from reconciler.desired.filespolicy import parse_paths

        return None if v is None else list(parse_paths(v))

    @field_validator("extra_volumes")
    @classmethod
    def _volumes(cls, v: list[str]) -> list[str]:
        for vol in v:
            if not _VOLUME_RE.match(vol):
                raise ValueError(f"{vol!r} is not a volume: write it like /host/path:/path[:ro]")
        return v


class SlackParams(StrictModel):
    webhook_url_file: str | None = None
    webhook_url: str | None = None  # inlining the secret is an explicit choice

    @field_validator("webhook_url_file")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        # it lands in the agent unit's ExecStart: no spaces, quotes or systemd specifiers (%)
        if v is not None and not re.match(r"^[A-Za-z0-9._/-]+$", v):
            raise ValueError(f"{v!r}: use only letters, digits and '._/-' in the path")
        return None if v is None else check_abs_path(v)

    @field_validator("webhook_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https://\S+$", v):
            raise ValueError("webhook_url must be an https:// URL without spaces")
        return v

    @model_validator(mode="after")
    def _one(self) -> SlackParams:
        if (self.webhook_url_file is None) == (self.webhook_url is None):
            raise ValueError(
                "give exactly one of webhook_url_file (a path on the node) or webhook_url "
                "(inlines the secret into user-data)"
            )
        return self


class FileParams(StrictModel):
    path: AbsPath
    content: str | None = None
    source: str | None = None  # relative to the params file
    mode: Mode = "0644"
    roles: list[RoleName] = Field(default_factory=lambda: list(_ALL_ROLES))

    @field_validator("mode", mode="before")
    @classmethod
    def _unquoted_mode(cls, v: object) -> object:
        if isinstance(v, int) and not isinstance(v, bool):
            # YAML 1.1 reads 0644 as the octal number 420: the digits are lost by now
            raise ValueError(
                f'YAML reads an unquoted mode as a number (0{v:o}): quote it, e.g. "0644"'
            )
        return v

    @model_validator(mode="after")
    def _one(self) -> FileParams:
        if (self.content is None) == (self.source is None):
            raise ValueError("give exactly one of content or source")
        return self


class UpdatesParams(StrictModel):
    reboot_strategy: Literal["etcd-lock", "off"] = "etcd-lock"
    fleet_lock_url: str | None = None  # Fedora CoreOS: the FleetLock server zincati asks

    @field_validator("fleet_lock_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://\S+$", v):
            raise ValueError(f"{v!r} is not a URL: write it like http://10.0.0.11:3333/")
        return v


class Params(StrictModel):
    cluster: ClusterParams
    etcd: EtcdParams
    repo: RepoParams
    agent: AgentParams
    prefix: str = "/swarmkeeper"
    os: Literal["flatcar", "fcos"] = "flatcar"
    ssh_authorized_keys: list[str] = Field(default_factory=list)
    slack: SlackParams | None = None
    files: list[FileParams] = Field(default_factory=list)
    updates: UpdatesParams = Field(default_factory=UpdatesParams)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if not _PREFIX_RE.match(v):
            raise ValueError(f"{v!r} is not an etcd key prefix: write it like /swarmkeeper")
        return v

    @field_validator("ssh_authorized_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for k in v:
            if not re.match(r"^(ssh|ecdsa|sk)-[A-Za-z0-9@.-]+ [A-Za-z0-9+/=]+( .*)?$", k) or (
                "\n" in k
            ):
                raise ValueError(f"{k[:30]!r}... is not an SSH public key line")
        return v


@dataclass(frozen=True, slots=True)
class LoadedParams:
    """Validated params plus the bytes of the extra files they reference."""

    params: Params
    file_contents: tuple[bytes, ...]  # one per params.files entry, same order


def load_params(path: str, data: bytes, base_dir: str | None = None) -> LoadedParams:
    """Parse and validate params.yml; raise ``InvalidDesiredState`` listing every problem."""
    value, pos, problems = load_yaml(path, data)
    if problems:
        raise InvalidDesiredState(problems)
    if value is None:
        raise InvalidDesiredState([Problem(path, 1, "empty file: start from `cloudconfig init`")])
    try:
        params = Params.model_validate(value)
    except pydantic.ValidationError as e:
        raise InvalidDesiredState(pydantic_problems(path, e, pos, Params)) from None
    problems = _cross_checks(path, params, pos)
    contents = _read_sources(path, params, pos, base_dir or os.path.dirname(path) or ".", problems)
    if problems:
        raise InvalidDesiredState(problems)
    return LoadedParams(params, contents)


def _cross_checks(path: str, p: Params, pos: Positions) -> list[Problem]:
    out: list[Problem] = []

    def add(at: tuple[str | int, ...], msg: str) -> None:
        out.append(Problem(path, pos.line(at), msg))

    e = p.etcd
    if e.discovery is None and e.static is None:
        add(("etcd",), "etcd: give discovery (a discovery URL) or static (the managers' addresses)")
    elif e.discovery is not None and e.static is not None:
        add(("etcd", "static"), "etcd: give discovery or static, not both")
    elif e.static is not None and len(e.static) != p.cluster.managers:
        add(
            ("etcd", "static"),
            f"etcd.static lists {len(e.static)} address(es) but cluster.managers is "
            f"{p.cluster.managers}: list one private address per manager",
        )
    if e.client_port == e.peer_port:
        add(("etcd", "peer_port"), "etcd.peer_port must differ from etcd.client_port")
    if p.os == "fcos" and p.updates.reboot_strategy == "etcd-lock" and not p.updates.fleet_lock_url:
        add(
            ("updates",) if "updates" in _top(pos) else ("os",),
            "os fcos coordinates reboots through zincati's fleet_lock: set "
            "updates.fleet_lock_url (a FleetLock server such as airlock) or "
            "updates.reboot_strategy: off",
        )
    seen: dict[str, int] = {}
    for i, f in enumerate(p.files):
        if f.path in seen:
            add(
                ("files", i, "path"),
                f"files: {f.path} is listed twice (first: item {seen[f.path]})",
            )
        seen.setdefault(f.path, i)
        if f.path in RESERVED_PATHS:
            add(("files", i, "path"), f"files: {f.path} is written by the generator itself")
    return out


def _top(pos: Positions) -> set[str]:
    return {str(k[0]) for k in pos.lines if len(k) == 1}


def _read_sources(
    path: str, p: Params, pos: Positions, base: str, problems: list[Problem]
) -> tuple[bytes, ...]:
    out: list[bytes] = []
    for i, f in enumerate(p.files):
        if f.content is not None:
            data = f.content.encode()
        else:
            assert f.source is not None
            src = os.path.join(base, f.source)
            try:
                with open(src, "rb") as fh:
                    data = fh.read(MAX_FILE_BYTES + 1)
            except OSError as err:
                problems.append(
                    Problem(
                        path, pos.line(("files", i, "source")),
                        f"files: cannot read {f.source!r}: {err.strerror}",
                    )
                )  # fmt: skip
                data = b""
        if len(data) > MAX_FILE_BYTES:
            problems.append(
                Problem(
                    path, pos.line(("files", i)),
                    f"files: {f.path} is over {MAX_FILE_BYTES // 1024} KiB: user-data is small",
                )
            )  # fmt: skip
        out.append(data)
    return tuple(out)


# Values no real cluster can have: the template's token, and the domains RFC 2606 reserves
# for examples (they never resolve). Generating user-data from them makes nodes that cannot
# form etcd, fetch the repo or pull the agent.
_PLACEHOLDER_RE = re.compile(
    r"replace-with-your-token|(^|[/@.])example\.(com|org|net)([:/]|$)|\.example([:/]|$)"
)


def placeholder_problems(path: str, data: bytes, p: Params) -> list[Problem]:
    """Every value of ``p`` that is still a placeholder, as ``path:line`` problems."""
    _, pos, _ = load_yaml(path, data)
    fields: list[tuple[tuple[str | int, ...], str | None]] = [
        (("etcd", "discovery"), p.etcd.discovery),
        (("repo", "url"), p.repo.url),
        (("agent", "image"), p.agent.image),
        (("updates", "fleet_lock_url"), p.updates.fleet_lock_url),
        (("slack", "webhook_url"), p.slack.webhook_url if p.slack else None),
    ]
    out = []
    for at, value in fields:
        if value and _PLACEHOLDER_RE.search(value):
            where = ".".join(str(a) for a in at)
            out.append(Problem(path, pos.line(at), f"{where}: {value!r} is a placeholder: put "
                               "your cluster's value here (or pass --allow-placeholders to "
                               "generate anyway, e.g. for a test)"))  # fmt: skip
    return out
