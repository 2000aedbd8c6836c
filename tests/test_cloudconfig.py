"""``swarmkeeper cloudconfig``: what each role's user-data holds, in both formats.

Every generated file is parsed back (YAML / JSON), its units read as systemd syntax and its
files decoded, and checked per role: the exact units and files, etcd member vs gRPC proxy,
the agent container's mounts and image, the reboot coordination. Ignition output must pass
the structural validator in tests/fixtures/userdata.py. Generating twice, in processes with
different hash seeds, gives identical bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudconfig.bundle import facts_script
from reconciler.cli import main
from tests.fixtures.userdata import (
    BASE_PARAMS,
    IMAGE,
    cloud_config_files,
    docker_run_parts,
    exec_argv,
    ignition_files,
    ignition_problems,
    load_cloud_config,
    option_values,
    parse_env,
    parse_shell_vars,
    parse_unit,
)

REPO = Path(__file__).resolve().parent.parent
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOpsKey ops@example.com"

PARAMS = (
    BASE_PARAMS
    + f"""\
ssh_authorized_keys: ["{KEY}"]
slack: {{webhook_url_file: /etc/swarmkeeper/slack-url}}
files:
  - {{path: /etc/motd, content: "hello\\n", mode: "0644"}}
  - {{path: /etc/worker-only, content: "w\\n", mode: "0600", roles: [worker]}}
"""
)

COMMON_FILES = {
    "/etc/swarmkeeper/agent.base.yaml",
    "/etc/swarmkeeper/agent.env",
    "/etc/swarmkeeper/bootstrap.conf",
    "/etc/swarmkeeper/node-facts.sh",
    "/etc/motd",
}
AGENT_VOLUMES = [
    "/run/systemd/private:/run/systemd/private",
    "/run/dbus/system_bus_socket:/run/dbus/system_bus_socket",
    "/var/run/docker.sock:/var/run/docker.sock",
    "/etc/systemd/system:/etc/systemd/system",
    "/etc/swarmkeeper:/etc/swarmkeeper",
    "/var/lib/swarmkeeper:/var/lib/swarmkeeper",
    "/:/host",
]


def generate(tmp_path: Path, params: str, *extra: str) -> dict[str, bytes]:
    p = tmp_path / "params.yml"
    p.write_text(params)
    out = tmp_path / "out"
    assert main(["cloudconfig", "--params", str(p), "--out", str(out), *extra]) == 0
    return {f.name: f.read_bytes() for f in sorted(out.iterdir())}


def role_view(name: str, data: bytes) -> tuple[list[dict[str, Any]], dict[str, tuple[bytes, int]]]:
    """(units as dicts with name/contents/enabled/dropins, files) for either format."""
    if name.endswith(".ign"):
        doc = json.loads(data)
        assert ignition_problems(doc) == []
        return doc["systemd"]["units"], ignition_files(doc)
    doc = load_cloud_config(data)
    units = [
        {
            "name": u["name"],
            **({"contents": u["content"]} if "content" in u else {}),
            **({"enabled": u["enable"]} if "enable" in u else {}),
            "dropins": [
                {"name": d["name"], "contents": d["content"]} for d in u.get("drop_ins", [])
            ],
        }
        for u in doc["coreos"]["units"]
    ]
    return units, cloud_config_files(doc)


def unit(units: list[dict[str, Any]], name: str) -> dict[str, list[str]]:
    (u,) = [u for u in units if u["name"] == name]
    return {k: v for s in parse_unit(u["contents"]).values() for k, v in s.items()}


@pytest.mark.parametrize("name", ["manager.yml", "worker.yml", "manager.ign", "worker.ign"])
def test_each_role_gets_exactly_its_units_and_files(tmp_path: Path, name: str) -> None:
    out = generate(tmp_path, PARAMS)
    assert sorted(out) == ["manager.ign", "manager.yml", "worker.ign", "worker.yml"]
    role = name.split(".")[0]
    units, files = role_view(name, out[name])
    etcd = "etcd-member.service" if role == "manager" else "etcd-proxy.service"
    assert [u["name"] for u in units] == [
        "docker.service", "swarmkeeper-facts.service", etcd, "swarmkeeper-agent.service",
        "locksmithd.service",
    ]  # fmt: skip
    enabled = {u["name"]: u.get("enabled") for u in units}
    assert enabled == {
        "docker.service": True, "swarmkeeper-facts.service": True, etcd: True,
        "swarmkeeper-agent.service": True, "locksmithd.service": None,  # left as Flatcar ships it
    }  # fmt: skip
    facts = unit(units, "swarmkeeper-facts.service")
    assert facts["ExecStart"] == ["/bin/sh /etc/swarmkeeper/node-facts.sh"]
    assert (facts["Type"], facts["RemainAfterExit"], facts["Restart"]) == (
        ["oneshot"],
        ["yes"],
        ["on-failure"],
    )
    assert {etcd, "swarmkeeper-agent.service", "locksmithd.service"} <= set(
        facts["Before"][0].split()
    )
    expected = COMMON_FILES | ({"/etc/worker-only"} if role == "worker" else set())
    if name.endswith(".ign"):
        expected |= {"/etc/flatcar/update.conf"}  # cloud-config says it in coreos.update
    assert set(files) == expected
    # the script survives the format byte for byte (YAML literal block / gzip'd data URL)
    assert files["/etc/swarmkeeper/node-facts.sh"] == (facts_script(), 0o755)
    assert files["/etc/motd"] == (b"hello\n", 0o644)
    if role == "worker":
        assert files["/etc/worker-only"] == (b"w\n", 0o600)
    conf = parse_shell_vars(files["/etc/swarmkeeper/bootstrap.conf"][0].decode())
    assert conf["ROLE"] == role and conf["ETCD_STATIC"] == "10.0.0.11,10.0.0.12,10.0.0.13"
    # the provider's address placeholder only where coreos-cloudinit substitutes it
    assert conf["ADDRESS_HINT"] == ("$private_ipv4" if name.endswith(".yml") else "")
    base = yaml.safe_load(files["/etc/swarmkeeper/agent.base.yaml"][0])
    assert base == {
        "repo": "https://git.lab.internal/ops/cluster.git", "branch": "main", "role": role,
        "etcd": "127.0.0.1:2379", "prefix": "/swarmkeeper", "scope": "system",
    }  # fmt: skip
    assert parse_env(files["/etc/swarmkeeper/agent.env"][0].decode()) == {
        "SWARMKEEPER_IMAGE": IMAGE
    }
    # the Slack URL is referenced by path, never inlined
    assert "/etc/swarmkeeper/slack-url" not in files
    assert b"hooks.slack.com" not in out[name]


@pytest.mark.parametrize("fmt", ["yml", "ign"])
def test_managers_run_an_etcd_member_and_workers_a_grpc_proxy(tmp_path: Path, fmt: str) -> None:
    out = generate(tmp_path, PARAMS)
    env = {"ETCD_IMAGE": "quay.io/coreos/etcd:v3.5.17", "SWARMKEEPER_NODE": "m1",
           "PRIVATE_IPV4": "10.0.0.11", "ETCD_BOOTSTRAP_FLAGS": "--discovery X --enable-v2=true",
           "ETCD_MEMBERS": "http://10.0.0.11:2379,http://10.0.0.12:2379"}  # fmt: skip

    m_units, _ = role_view(f"manager.{fmt}", out[f"manager.{fmt}"])
    member = unit(m_units, "etcd-member.service")
    assert member["EnvironmentFile"] == [
        "/etc/swarmkeeper/node.env", "-/etc/swarmkeeper/etcd-bootstrap.env",
    ]  # fmt: skip
    assert member["Restart"] == ["always"] and member["WantedBy"] == ["multi-user.target"]
    assert "swarmkeeper-facts.service" in member["After"][0].split()
    opts, image, args = docker_run_parts(exec_argv(member["ExecStart"][0], env))
    assert image == "quay.io/coreos/etcd:v3.5.17"
    assert option_values(opts, "--net") == ["host"]
    assert option_values(opts, "-v") == ["/var/lib/etcd:/var/lib/etcd"]
    assert args == [
        "etcd", "--name", "m1", "--data-dir", "/var/lib/etcd",
        "--listen-client-urls", "http://10.0.0.11:2379,http://127.0.0.1:2379",
        "--advertise-client-urls", "http://10.0.0.11:2379",
        "--listen-peer-urls", "http://10.0.0.11:2380",
        "--initial-advertise-peer-urls", "http://10.0.0.11:2380",
        "--discovery", "X", "--enable-v2=true",
    ]  # fmt: skip
    assert not [u for u in m_units if u["name"] == "etcd-proxy.service"]

    w_units, _ = role_view(f"worker.{fmt}", out[f"worker.{fmt}"])
    proxy = unit(w_units, "etcd-proxy.service")
    _, image, args = docker_run_parts(exec_argv(proxy["ExecStart"][0], env))
    assert image == "quay.io/coreos/etcd:v3.5.17"
    assert args == [
        "etcd", "grpc-proxy", "start",
        "--endpoints=http://10.0.0.11:2379,http://10.0.0.12:2379", "--listen-addr=127.0.0.1:2379",
    ]  # fmt: skip
    assert not [u for u in w_units if u["name"] == "etcd-member.service"]


@pytest.mark.parametrize("name", ["manager.yml", "worker.yml", "manager.ign", "worker.ign"])
def test_agent_unit_runs_the_image_with_the_host_sockets_and_dirs(
    tmp_path: Path, name: str
) -> None:
    out = generate(tmp_path, PARAMS)
    units, _ = role_view(name, out[name])
    agent = unit(units, "swarmkeeper-agent.service")
    assert agent["EnvironmentFile"] == ["/etc/swarmkeeper/agent.env"]
    assert agent["Restart"] == ["on-failure"]
    etcd = "etcd-member.service" if name.startswith("manager") else "etcd-proxy.service"
    assert etcd in agent["After"][0].split()
    argv = exec_argv(agent["ExecStart"][0], {"SWARMKEEPER_IMAGE": IMAGE})
    assert argv[0] == "/usr/bin/docker"
    opts, image, args = docker_run_parts(argv)
    assert image == IMAGE
    assert option_values(opts, "-v") == AGENT_VOLUMES
    assert option_values(opts, "--net") == ["host"]
    assert option_values(opts, "--user") == ["0:0"]
    assert option_values(opts, "-e") == [
        "SWARMKEEPER_DOCKER=unix:///var/run/docker.sock",
        "SLACK_WEBHOOK_URL_FILE=/etc/swarmkeeper/slack-url",
    ]
    assert "--rm" in opts
    # --root /host: the files roles place anywhere land on the host, through the /:/host mount
    assert args == [
        "--log-level",
        "info",
        "agent",
        "--config",
        "/etc/swarmkeeper/agent.yaml",
        "--root",
        "/host",
        "--self-unit",
        "swarmkeeper-agent.service",
    ]


def test_cloud_config_sets_etcd_lock_and_ssh_keys(tmp_path: Path) -> None:
    out = generate(tmp_path, PARAMS, "--format", "cloud-config")
    assert sorted(out) == ["manager.yml", "worker.yml"]
    for name in out:
        doc = load_cloud_config(out[name])
        assert doc["coreos"]["update"] == {"reboot_strategy": "etcd-lock"}
        assert doc["ssh_authorized_keys"] == [KEY]
        (lock,) = [u for u in doc["coreos"]["units"] if u["name"] == "locksmithd.service"]
        assert "command" not in lock and "content" not in lock  # only our drop-in
        dropin = parse_unit(lock["drop_ins"][0]["content"])
        assert dropin["Service"]["EnvironmentFile"] == ["-/etc/swarmkeeper/locksmithd.env"]
        assert dropin["Unit"]["After"] == ["swarmkeeper-facts.service"]
        conf = parse_shell_vars(
            cloud_config_files(doc)["/etc/swarmkeeper/bootstrap.conf"][0].decode()
        )
        assert conf["LOCKSMITH"] == "true" and conf["ETCD_ENABLE_V2"] == "true"


def test_ignition_flatcar_update_conf_and_core_user(tmp_path: Path) -> None:
    out = generate(tmp_path, PARAMS, "--format", "ignition")
    assert sorted(out) == ["manager.ign", "worker.ign"]
    for name in out:
        doc = json.loads(out[name])
        assert doc["ignition"] == {"version": "3.3.0"}
        assert doc["passwd"] == {"users": [{"name": "core", "sshAuthorizedKeys": [KEY]}]}
        files = ignition_files(doc)
        assert files["/etc/flatcar/update.conf"] == (b"REBOOT_STRATEGY=etcd-lock\n", 0o644)
        assert not any(p.startswith("/etc/zincati") for p in files)


def test_fcos_gets_zincati_fleet_lock_per_role_and_no_locksmith(tmp_path: Path) -> None:
    params = PARAMS + "os: fcos\nupdates: {fleet_lock_url: 'http://10.0.0.11:3333/'}\n"
    out = generate(tmp_path, params)
    assert sorted(out) == ["manager.ign", "worker.ign"]  # Fedora CoreOS reads no cloud-config
    for role in ("manager", "worker"):
        doc = json.loads(out[f"{role}.ign"])
        assert ignition_problems(doc) == []
        files = ignition_files(doc)
        assert "/etc/flatcar/update.conf" not in files
        toml = files["/etc/zincati/config.d/55-swarmkeeper-updates.toml"][0].decode()
        assert f'[identity]\ngroup = "{role}"' in toml
        assert 'strategy = "fleet_lock"' in toml
        assert 'base_url = "http://10.0.0.11:3333/"' in toml
        names = [u["name"] for u in doc["systemd"]["units"]]
        assert "locksmithd.service" not in names
        agent = unit(doc["systemd"]["units"], "swarmkeeper-agent.service")
        opts, _, _ = docker_run_parts(
            exec_argv(agent["ExecStart"][0], {"SWARMKEEPER_IMAGE": IMAGE})
        )
        assert option_values(opts, "--security-opt") == ["label=disable"]  # SELinux


def test_inline_slack_url_is_written_root_only_and_podman_runtime(tmp_path: Path) -> None:
    params = PARAMS.replace(
        "slack: {webhook_url_file: /etc/swarmkeeper/slack-url}",
        "slack: {webhook_url: 'https://hooks.slack.com/services/T/B/x'}",
    ).replace(f"  image: {IMAGE}", f"  image: {IMAGE}\n  runtime: podman")
    out = generate(tmp_path, params, "--format", "ignition")
    files = ignition_files(json.loads(out["manager.ign"]))
    assert files["/etc/swarmkeeper/slack-url"] == (
        b"https://hooks.slack.com/services/T/B/x\n",
        0o600,
    )
    agent = unit(json.loads(out["manager.ign"])["systemd"]["units"], "swarmkeeper-agent.service")
    assert agent["ExecStart"][0].startswith("/usr/bin/podman run ")
    # outputs may hold a secret now: owner-only
    assert (tmp_path / "out" / "manager.ign").stat().st_mode & 0o777 == 0o600


def test_update_strategy_off_turns_locksmith_off(tmp_path: Path) -> None:
    out = generate(tmp_path, PARAMS + "updates: {reboot_strategy: 'off'}\n")
    doc = load_cloud_config(out["manager.yml"])
    assert doc["coreos"]["update"] == {"reboot_strategy": "off"}
    assert "locksmithd.service" not in [u["name"] for u in doc["coreos"]["units"]]
    files = ignition_files(json.loads(out["worker.ign"]))
    assert files["/etc/flatcar/update.conf"][0] == b"REBOOT_STRATEGY=off\n"
    conf = parse_shell_vars(files["/etc/swarmkeeper/bootstrap.conf"][0].decode())
    assert conf["LOCKSMITH"] == "false" and conf["ETCD_ENABLE_V2"] == "false"


def test_generating_twice_gives_identical_bytes(tmp_path: Path) -> None:
    (tmp_path / "params.yml").write_text(PARAMS)
    outs = []
    for seed in ("1", "2"):  # separate processes, different hash seeds
        out = tmp_path / f"out{seed}"
        subprocess.run(
            [sys.executable, "-m", "reconciler", "cloudconfig", "--params",
             str(tmp_path / "params.yml"), "--out", str(out)],
            check=True, env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True,
        )  # fmt: skip
        outs.append({f.name: f.read_bytes() for f in out.iterdir()})
    assert outs[0] == outs[1]
    assert sorted(outs[0]) == ["manager.ign", "manager.yml", "worker.ign", "worker.yml"]


def test_init_writes_a_params_file_that_generates_and_refuses_to_overwrite(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "params.yml"
    assert main(["cloudconfig", "init", "--out", str(target)]) == 0
    text = target.read_text()
    assert text.startswith("# swarmkeeper provisioning parameters")
    for key in (
        "cluster:",
        "etcd:",
        "repo:",
        "agent:",
        "prefix:",
        "ssh_authorized_keys:",
        "# slack:",
    ):
        assert f"\n{key}" in text, key
    out = tmp_path / "out"
    # the template's placeholders are refused, each named at its line, and nothing written
    capsys.readouterr()
    assert main(["cloudconfig", "--params", str(target), "--out", str(out)]) == 1
    err = capsys.readouterr().err.splitlines()
    lines = text.splitlines()
    refused = [e for e in err if "is a placeholder" in e]
    assert [e.split(": ", 2)[1] for e in refused] == ["etcd.discovery", "repo.url", "agent.image"]
    for e in refused:  # each points at the line that holds the value
        line = int(e.split(":")[1])
        assert e.split("'")[1] in lines[line - 1], e
    assert not out.exists()
    assert main(["cloudconfig", "--params", str(target), "--out", str(out),
                 "--allow-placeholders"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["manager.ign", "manager.yml", "worker.ign", "worker.yml"]  # fmt: skip
    target.write_text("mine\n")
    capsys.readouterr()
    assert main(["cloudconfig", "init", "--out", str(target)]) == 1
    assert "exists; use --force" in capsys.readouterr().err
    assert target.read_text() == "mine\n"
    assert main(["cloudconfig", "init", "--out", str(target), "--force"]) == 0
    assert target.read_text() == text


def test_discovery_url_prints_the_command_and_never_fetches(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["cloudconfig", "discovery-url", "--size", "3"]) == 0
    assert capsys.readouterr().out == "curl -fsS 'https://discovery.etcd.io/new?size=3'\n"
    assert main(["cloudconfig", "discovery-url", "--size", "4"]) == 1
    assert "--size must be 1, 3 or 5" in capsys.readouterr().err


def test_discovery_params_reach_the_bootstrap_conf(tmp_path: Path) -> None:
    params = PARAMS.replace(
        "  static: [10.0.0.11, 10.0.0.12, 10.0.0.13]",
        "  discovery: https://discovery.etcd.io/0123abcd",
    )
    out = generate(tmp_path, params, "--format", "ignition")
    conf = parse_shell_vars(ignition_files(json.loads(out["worker.ign"]))["/etc/swarmkeeper/bootstrap.conf"][0].decode())  # fmt: skip
    assert conf["ETCD_DISCOVERY"] == "https://discovery.etcd.io/0123abcd"
    assert conf["ETCD_STATIC"] == ""


def test_extra_volumes_and_a_slack_file_elsewhere_are_mounted(tmp_path: Path) -> None:
    params = PARAMS.replace("/etc/swarmkeeper/slack-url", "/etc/secrets/slack-url").replace(
        f"  image: {IMAGE}", f"  image: {IMAGE}\n  extra_volumes: ['/srv/data:/srv/data']"
    )
    out = generate(tmp_path, params, "--format", "ignition")
    agent = unit(json.loads(out["worker.ign"])["systemd"]["units"], "swarmkeeper-agent.service")
    opts, _, _ = docker_run_parts(exec_argv(agent["ExecStart"][0], {"SWARMKEEPER_IMAGE": IMAGE}))
    assert option_values(opts, "-v") == [*AGENT_VOLUMES, "/etc/secrets:/etc/secrets:ro", "/srv/data:/srv/data"]  # fmt: skip
    assert option_values(opts, "-e") == [
        "SWARMKEEPER_DOCKER=unix:///var/run/docker.sock",
        "SLACK_WEBHOOK_URL_FILE=/etc/secrets/slack-url",
    ]


def test_the_files_policy_goes_to_the_agent_config_not_git(tmp_path: Path) -> None:
    params = PARAMS.replace(
        f"  image: {IMAGE}",
        f"  image: {IMAGE}\n  files_allow_paths: [/opt/, /etc/app.conf]\n  files_allow_modes: [setgid]",
    )
    out = generate(tmp_path, params, "--format", "ignition")
    _, files = role_view("worker.ign", out["worker.ign"])
    base = yaml.safe_load(files["/etc/swarmkeeper/agent.base.yaml"][0])
    assert base["files_allow_paths"] == ["/opt/", "/etc/app.conf"]
    assert base["files_allow_modes"] == ["setgid"]


def test_file_source_is_read_relative_to_the_params_file(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\n\x00binary\n")
    params = PARAMS + "  - {path: /etc/ssl/corp-ca.pem, source: ca.pem}\n"
    out = generate(tmp_path, params)
    want = (b"-----BEGIN CERTIFICATE-----\n\x00binary\n", 0o644)
    assert ignition_files(json.loads(out["manager.ign"]))["/etc/ssl/corp-ca.pem"] == want
    # not valid text for a YAML literal block: base64 in cloud-config
    doc = load_cloud_config(out["worker.yml"])
    (entry,) = [f for f in doc["write_files"] if f["path"] == "/etc/ssl/corp-ca.pem"]
    assert entry["encoding"] == "b64"
    assert cloud_config_files(doc)["/etc/ssl/corp-ca.pem"] == want


# both formats carry the same unit texts (one bundle), so the Ignition side suffices
@pytest.mark.parametrize("name", ["manager.ign", "worker.ign"])
def test_generated_units_pass_systemd_analyze_verify(tmp_path: Path, name: str) -> None:
    out = generate(tmp_path, PARAMS)
    units, _ = role_view(name, out[name])
    unit_dir = tmp_path / "units"
    unit_dir.mkdir()
    paths = []
    for u in units:
        if "contents" in u:
            (unit_dir / u["name"]).write_text(u["contents"])
            paths.append(str(unit_dir / u["name"]))
        for d in u.get("dropins", []):
            (unit_dir / f"{u['name']}.d").mkdir()
            (unit_dir / f"{u['name']}.d" / d["name"]).write_text(d["contents"])
    assert len(paths) == 3
    r = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *paths],
        env={**os.environ, "SYSTEMD_UNIT_PATH": f"{unit_dir}:"}, capture_output=True, text=True,
    )  # fmt: skip
    assert (r.returncode, r.stderr) == (0, "")


def test_user_data_over_the_ec2_limit_is_written_with_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the facts script is gzip'd in Ignition, so the defaults stay well under 16 KiB...
    out = generate(tmp_path, PARAMS)
    assert all(len(data) < 12 * 1024 for data in out.values()), {k: len(v) for k, v in out.items()}
    assert "warning" not in capsys.readouterr().err
    # ...but a big incompressible extra file cannot
    blob = "".join(f"{(i * 2654435761) % 4294967296:08x}" for i in range(2500))
    out = generate(tmp_path, PARAMS + f"  - {{path: /etc/blob, content: '{blob}'}}\n")
    err = capsys.readouterr().err
    for name in ("manager.ign", "manager.yml", "worker.ign", "worker.yml"):
        assert (
            f"warning: {tmp_path / 'out' / name} is {len(out[name])} bytes: EC2 takes at most 16384"
            in err
        )


def _ign(**over: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ignition": {"version": "3.3.0"},
        "storage": {"files": [{"path": "/etc/a", "mode": 420, "contents": {"source": "data:,x"}}]},
        "systemd": {"units": [{"name": "a.service", "enabled": True, "contents": "[Unit]\n"}]},
    }
    doc.update(over)
    return doc


# the validator the Ignition checks rely on must itself reject broken configs
@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (_ign(ignition={}), "ignition.version is required"),
        (_ign(ignition={"version": "2.2.0"}), "ignition.version '2.2.0' is not a 3.x spec version"),
        (_ign(storage={"files": [{"path": "etc/a", "mode": 420, "contents": {"source": "data:,x"}}]}),
         "storage.files[0].path must be an absolute path"),
        (_ign(storage={"files": [{"path": "/a", "mode": "0644", "contents": {"source": "data:,x"}}]}),
         "storage.files[0].mode must be an integer file mode"),
        (_ign(storage={"files": [{"path": "/a", "mode": 420, "contents": {"source": "https://x"}}]}),
         "storage.files[0].contents.source must be a data URL"),
        (_ign(storage={"files": [{"path": "/a", "mode": 420, "contents": {"source": "data:,a b"}}]}),
         "storage.files[0].contents.source has characters a URL may not carry raw"),
        (_ign(systemd={"units": [{"name": "a.service"}]}),
         "systemd.units[0] does nothing: give contents, enabled or dropins"),
        (_ign(systemd={"units": [{"name": "a", "enabled": True}]}), "systemd.units[0].name must be a unit name"),
        (_ign(systemd={"units": [{"name": "a.service", "enable": True}]}), "systemd.units[0]: unknown key 'enable'"),
        (_ign(systemd={"units": [{"name": "a.service", "dropins": [{"name": "x", "contents": ""}]}]}),
         "systemd.units[0].dropins[0].name must end in .conf"),
        (_ign(networkd={}), "unknown top-level key 'networkd'"),
    ],
)  # fmt: skip
def test_ignition_validator_rejects_broken_configs(doc: dict[str, Any], problem: str) -> None:
    assert ignition_problems(_ign()) == []
    assert problem in ignition_problems(doc)
