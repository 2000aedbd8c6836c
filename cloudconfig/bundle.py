"""What one role's node gets at first boot, independent of the user-data format.

``build(loaded, role, fmt)`` returns a ``Bundle``: the files to write, the systemd units (with
their drop-ins) to enable and start, the SSH keys and the reboot strategy. The two writers in
``formats.py`` only serialise a bundle, so cloud-config and Ignition always carry the same
units. Pure: no I/O beyond reading the packaged facts script.

On a node the chain is: ``swarmkeeper-facts.service`` (node name from the hostname, private
address from ``$private_ipv4`` or the routing table, etcd bootstrap flags) → ``etcd-member``
(managers) or ``etcd-proxy`` (workers, ``etcd grpc-proxy``) → ``swarmkeeper-agent`` (the agent
image with the host's D-Bus, docker socket, unit dir and state dir), which installs everything
else from the state repo. Unit and env-file names match the repo's default ``units/`` so the
agent takes them over unchanged.
"""

from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from importlib import resources
from typing import Literal

import yaml

from cloudconfig.params import DEFAULT_SLACK_FILE, LoadedParams, Params

Format = Literal["cloud-config", "ignition"]
ROLES = ("manager", "worker")
CONF_DIR = "/etc/swarmkeeper"
FACTS_SCRIPT = f"{CONF_DIR}/node-facts.sh"
STATE_DIR = "/var/lib/swarmkeeper"


@dataclass(frozen=True, slots=True)
class File:
    path: str
    content: bytes
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class Unit:
    name: str
    content: str | None = None  # None: a unit the OS ships (only enabled or given drop-ins)
    enabled: bool | None = True  # None: leave the unit's enablement as the OS ships it
    start: bool = True
    dropins: tuple[tuple[str, str], ...] = ()  # (name, content)


@dataclass(frozen=True, slots=True)
class Bundle:
    role: str
    os: str
    files: tuple[File, ...]
    units: tuple[Unit, ...]
    ssh_authorized_keys: tuple[str, ...] = ()
    reboot_strategy: str = "etcd-lock"  # what cloud-config's coreos.update gets


def facts_script() -> bytes:
    return (resources.files("cloudconfig") / "node_facts.sh").read_bytes()


def _runtime(p: Params) -> str:
    return f"/usr/bin/{p.agent.runtime}"


def _selinux(p: Params) -> str:
    # Fedora CoreOS enforces SELinux: host sockets and dirs are not relabelled, so the
    # containers that need them run unconfined instead.
    return " --security-opt label=disable" if p.os == "fcos" else ""


def facts_unit(role: str) -> str:
    first = "etcd-member.service" if role == "manager" else "etcd-proxy.service"
    return f"""[Unit]
Description=swarmkeeper node facts: name, private address and etcd bootstrap flags
Wants=network-online.target
After=network-online.target
Before={first} swarmkeeper-agent.service locksmithd.service
StartLimitIntervalSec=0

[Service]
Type=oneshot
RemainAfterExit=yes
# a worker waits for the managers to register in the discovery URL: keep trying
TimeoutStartSec=15min
Restart=on-failure
RestartSec=10
ExecStart=/bin/sh {FACTS_SCRIPT}

[Install]
WantedBy=multi-user.target
"""


def etcd_member_unit(p: Params) -> str:
    rt, c, q = _runtime(p), p.etcd.client_port, p.etcd.peer_port
    return f"""[Unit]
Description=etcd member of the swarmkeeper cluster (managers)
Wants=network-online.target docker.service swarmkeeper-facts.service
After=network-online.target docker.service swarmkeeper-facts.service

[Service]
# Node facts (SWARMKEEPER_NODE, PRIVATE_IPV4) and the flags swarmkeeper-facts wrote at boot
EnvironmentFile=/etc/swarmkeeper/node.env
EnvironmentFile=-/etc/swarmkeeper/etcd-bootstrap.env
ExecStartPre=-{rt} rm -f etcd-member
ExecStart={rt} run --rm --name etcd-member --net host{_selinux(p)} \\
  -v /var/lib/etcd:/var/lib/etcd ${{ETCD_IMAGE}} etcd \\
  --name ${{SWARMKEEPER_NODE}} --data-dir /var/lib/etcd \\
  --listen-client-urls http://${{PRIVATE_IPV4}}:{c},http://127.0.0.1:{c} \\
  --advertise-client-urls http://${{PRIVATE_IPV4}}:{c} \\
  --listen-peer-urls http://${{PRIVATE_IPV4}}:{q} \\
  --initial-advertise-peer-urls http://${{PRIVATE_IPV4}}:{q} \\
  $ETCD_BOOTSTRAP_FLAGS
ExecStop={rt} stop etcd-member
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
"""


def etcd_proxy_unit(p: Params) -> str:
    rt, c = _runtime(p), p.etcd.client_port
    return f"""[Unit]
Description=etcd gRPC proxy in front of the managers (workers)
Wants=network-online.target docker.service swarmkeeper-facts.service
After=network-online.target docker.service swarmkeeper-facts.service

[Service]
EnvironmentFile=/etc/swarmkeeper/node.env
# ETCD_MEMBERS (comma-separated manager client URLs) written by swarmkeeper-facts at boot
EnvironmentFile=-/etc/swarmkeeper/etcd-bootstrap.env
ExecStartPre=-{rt} rm -f etcd-proxy
ExecStart={rt} run --rm --name etcd-proxy --net host{_selinux(p)} ${{ETCD_IMAGE}} \\
  etcd grpc-proxy start --endpoints=${{ETCD_MEMBERS}} --listen-addr=127.0.0.1:{c}
ExecStop={rt} stop etcd-proxy
Restart=always
RestartSec=5

[Install]
WantedBy=multi-user.target
"""


def agent_volumes(p: Params) -> list[str]:
    vols = [
        # systemd's private socket first (the agent is root, like systemctl): it needs no
        # dbus-daemon, so a hung or restarting bus does not stall the agent; the bus stays
        # the fallback
        "/run/systemd/private:/run/systemd/private",
        "/run/dbus/system_bus_socket:/run/dbus/system_bus_socket",
        "/var/run/docker.sock:/var/run/docker.sock",
        "/etc/systemd/system:/etc/systemd/system",
        f"{CONF_DIR}:{CONF_DIR}",
        f"{STATE_DIR}:{STATE_DIR}",
        # files the roles place anywhere on the host (/etc/motd, /opt/...) go through
        # --root /host; units still name the host paths, which the planner maps back
        "/:/host",
    ]
    slack = _slack_file(p)
    if slack and not slack.startswith(CONF_DIR + "/"):
        d = posixpath.dirname(slack)
        vols.append(f"{d}:{d}:ro")
    vols.extend(p.agent.extra_volumes)
    return vols


def agent_unit(p: Params, role: str) -> str:
    rt = _runtime(p)
    # both etcd units are named so the repo's one agent unit (units/) matches every role's
    etcd = "etcd-member.service etcd-proxy.service"
    vols = " \\\n".join(f"  -v {v}" for v in agent_volumes(p))
    slack = _slack_file(p)
    # the agent forms and keeps the swarm through the engine's socket mounted above
    env = " \\\n  -e SWARMKEEPER_DOCKER=unix:///var/run/docker.sock"
    env += f" \\\n  -e SLACK_WEBHOOK_URL_FILE={slack}" if slack else ""
    return f"""[Unit]
Description=swarmkeeper agent: keeps this node on the desired state in git
Wants=network-online.target docker.service swarmkeeper-facts.service
After=network-online.target docker.service swarmkeeper-facts.service {etcd}
StartLimitIntervalSec=0

[Service]
# SWARMKEEPER_IMAGE; agent.yaml holds the repo, role, etcd and this node's facts
EnvironmentFile=/etc/swarmkeeper/agent.env
ExecStartPre=-{rt} rm -f swarmkeeper-agent
# root in the container: managing systemd (its private socket, else the system bus) and writing
# /etc/systemd/system need it (see docs/provisioning.md)
ExecStart={rt} run --rm --name swarmkeeper-agent --net host --user 0:0{_selinux(p)} \\
{vols}{env} \\
  ${{SWARMKEEPER_IMAGE}} --log-level {p.agent.log_level} agent \\
  --config /etc/swarmkeeper/agent.yaml --root /host --self-unit swarmkeeper-agent.service
ExecStop={rt} stop swarmkeeper-agent
Restart=on-failure
RestartSec=5

[Install]
WantedBy=multi-user.target
"""


LOCKSMITH_DROPIN = """[Unit]
Wants=swarmkeeper-facts.service
After=swarmkeeper-facts.service

[Service]
# LOCKSMITHD_ENDPOINT (etcd members, v2 API) and LOCKSMITHD_GROUP (the role): managers and
# workers hold separate semaphores of 1, so two managers never reboot at once.
EnvironmentFile=-/etc/swarmkeeper/locksmithd.env
"""


def _slack_file(p: Params) -> str | None:
    if p.slack is None:
        return None
    return p.slack.webhook_url_file or DEFAULT_SLACK_FILE


def _locksmith(p: Params) -> bool:
    return p.os == "flatcar" and p.updates.reboot_strategy == "etcd-lock"


def bootstrap_conf(p: Params, role: str, fmt: Format) -> bytes:
    e = p.etcd
    pairs = [
        ("ROLE", role),
        ("CLUSTER", p.cluster.name),
        ("MANAGERS", str(p.cluster.managers)),
        ("PREFIX", p.prefix),
        ("ETCD_IMAGE", e.image),
        ("ETCD_DISCOVERY", e.discovery or ""),
        ("ETCD_STATIC", ",".join(e.static or [])),
        ("ETCD_CLIENT_PORT", str(e.client_port)),
        ("ETCD_PEER_PORT", str(e.peer_port)),
        # locksmith takes its lock through the etcd v2 API, off by default since etcd 3.4
        ("ETCD_ENABLE_V2", "true" if _locksmith(p) else "false"),
        ("LOCKSMITH", "true" if _locksmith(p) else "false"),
        # coreos-cloudinit replaces $private_ipv4 in user-data on providers that have one
        ("ADDRESS_HINT", "$private_ipv4" if fmt == "cloud-config" else ""),
    ]
    body = "".join(f"{k}={shlex.quote(v)}\n" for k, v in pairs)
    return ("# Inputs of node-facts.sh, generated by `swarmkeeper cloudconfig`.\n" + body).encode()


def agent_base(p: Params, role: str) -> bytes:
    """The node-independent part of agent.yaml (keys are the agent's flag names)."""
    doc: dict[str, object] = {
        "repo": p.repo.url,
        "branch": p.repo.branch,
        "role": role,
        "etcd": f"127.0.0.1:{p.etcd.client_port}",
        "prefix": p.prefix,
        "scope": "system",
    }
    # the node's files policy lives here, with the node, never in the state repo
    if p.agent.files_allow_paths is not None:
        doc["files_allow_paths"] = list(p.agent.files_allow_paths)
    if p.agent.files_allow_modes:
        doc["files_allow_modes"] = list(p.agent.files_allow_modes)
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False).encode()


def update_files(p: Params, role: str, fmt: Format) -> list[File]:
    """The reboot coordination each OS reads (cloud-config sets Flatcar's through coreos.update)."""
    if p.os == "fcos":
        if p.updates.reboot_strategy == "off":
            body = "[updates]\nenabled = false\n"
        else:
            body = (
                f'[identity]\ngroup = "{role}"\n\n[updates]\nstrategy = "fleet_lock"\n\n'
                f'[updates.fleet_lock]\nbase_url = "{p.updates.fleet_lock_url}"\n'
            )
        head = "# swarmkeeper: managers and workers take FleetLock slots in separate groups\n"
        return [File("/etc/zincati/config.d/55-swarmkeeper-updates.toml", (head + body).encode())]
    if fmt == "ignition":
        return [File("/etc/flatcar/update.conf", f"REBOOT_STRATEGY={p.updates.reboot_strategy}\n".encode())]  # fmt: skip
    return []


def build(loaded: LoadedParams, role: str, fmt: Format) -> Bundle:
    p = loaded.params
    files = [
        File(f"{CONF_DIR}/bootstrap.conf", bootstrap_conf(p, role, fmt)),
        File(FACTS_SCRIPT, facts_script(), 0o755),
        File(f"{CONF_DIR}/agent.base.yaml", agent_base(p, role)),
        File(f"{CONF_DIR}/agent.env", f"SWARMKEEPER_IMAGE={p.agent.image}\n".encode()),
        *update_files(p, role, fmt),
    ]
    if p.slack is not None and p.slack.webhook_url is not None:
        # inlined on purpose by the params: readable by root only
        files.append(File(DEFAULT_SLACK_FILE, (p.slack.webhook_url + "\n").encode(), 0o600))
    for f, data in zip(p.files, loaded.file_contents, strict=True):
        if role in f.roles:
            files.append(File(f.path, data, int(f.mode, 8)))
    etcd = etcd_member_unit(p) if role == "manager" else etcd_proxy_unit(p)
    etcd_name = "etcd-member.service" if role == "manager" else "etcd-proxy.service"
    units = [
        Unit("docker.service"),  # Flatcar only socket-activates docker; swarm needs it at boot
        Unit("swarmkeeper-facts.service", facts_unit(role)),
        Unit(etcd_name, etcd),
        Unit("swarmkeeper-agent.service", agent_unit(p, role)),
    ]
    if _locksmith(p):
        units.append(
            Unit(
                "locksmithd.service",
                enabled=None,
                start=False,
                dropins=(("20-swarmkeeper.conf", LOCKSMITH_DROPIN),),
            )
        )
    return Bundle(
        role=role,
        os=p.os,
        files=tuple(sorted(files, key=lambda f: f.path)),
        units=tuple(units),
        ssh_authorized_keys=tuple(p.ssh_authorized_keys),
        reboot_strategy=p.updates.reboot_strategy,
    )
