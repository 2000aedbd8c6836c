"""Option resolution: flag > SWARMKEEPER_<KEY> > --config file > default, and clear errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from reconciler import config
from reconciler.errors import UsageError
from reconciler.models import Role


def parse(argv: list[str], env: dict[str, str] | None = None) -> config.Config:
    p = argparse.ArgumentParser()
    config.add_options(p)
    config.add_agent_options(p)
    return config.load(p.parse_args(argv), env or {})


def test_defaults_need_no_config_file() -> None:
    c = parse([], {"HOME": "/home/x"})
    assert (c.repo, c.branch, c.rev, c.role, c.address, c.scope) == (
        ".",
        "main",
        None,
        None,
        "127.0.0.1",
        "system",
    )
    assert c.state_dir == Path("/var/lib/swarmkeeper") and c.unit_dir is None and c.root is None
    assert c.etcd == ("127.0.0.1:2379",) and c.prefix == "/swarmkeeper" and c.poll_interval == 60.0
    assert c.node  # the host name


def test_user_scope_state_dir_follows_xdg() -> None:
    assert parse(["--scope", "user"], {"HOME": "/home/x"}).state_dir == Path(
        "/home/x/.local/state/swarmkeeper"
    )
    assert parse(["--scope", "user"], {"XDG_STATE_HOME": "/s"}).state_dir == Path("/s/swarmkeeper")


def test_precedence_flag_env_file_default(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text(
        "node: from-file\nrole: worker\nbranch: file-branch\npoll_interval: 5m\netcd: [a:1, b:2]\nstate_dir: /f\n"
    )
    env = {
        "SWARMKEEPER_ROLE": "manager",
        "SWARMKEEPER_BRANCH": "env-branch",
        "SWARMKEEPER_CONFIG": str(f),
    }
    c = parse(["--branch", "flag-branch"], env)
    assert c.branch == "flag-branch"  # flag beats env and file
    assert c.role is Role.MANAGER  # env beats file
    assert c.node == "from-file" and c.poll_interval == 300.0 and c.etcd == ("a:1", "b:2")
    assert c.state_dir == Path("/f")
    assert c.repo == "."  # default
    assert parse(["--config", str(f), "--etcd", "x:9,y:8"]).etcd == ("x:9", "y:8")


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--role", "boss"], {}, "--role: 'boss' is not one of manager, worker"),
        (["--scope", "session"], {}, "--scope: 'session' is not one of system, user"),
        (
            ["--address", "10.0.0.300"],
            {},
            "--address: '10.0.0.300' does not appear to be an IPv4 or IPv6 address",
        ),
        (["--etcd", "localhost"], {}, "--etcd: endpoint 'localhost' is not HOST:PORT"),
        (["--listen", "0.0.0.0:99999"], {}, "--listen: address '0.0.0.0:99999' is not HOST:PORT"),
        (["--poll-interval", "-3"], {}, "--poll-interval: must be > 0"),
        (["--prefix", "sk"], {}, "--prefix: 'sk' must start with '/'"),
        ([], {"SWARMKEEPER_SCOPE": "nope"}, "SWARMKEEPER_SCOPE: 'nope' is not one of system, user"),
        (["--node", "a/b"], {}, "--node: 'a/b' is not a node name"),
    ],
)
def test_bad_values_name_the_option(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError) as e:
        parse(argv, env)
    assert str(e.value) == message


def test_bad_config_files(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("nodee: x\n")
    with pytest.raises(UsageError, match=r"unknown key 'nodee' \(did you mean 'node'\?\)"):
        parse(["--config", str(f)])
    f.write_text("role: [x\n")
    with pytest.raises(UsageError, match="not valid YAML"):
        parse(["--config", str(f)])
    f.write_text("- a\n")
    with pytest.raises(UsageError, match="expected a mapping"):
        parse(["--config", str(f)])
    f.write_text("scope: galaxy\n")
    with pytest.raises(
        UsageError, match=r"--config .*c.yaml: scope: 'galaxy' is not one of system, user"
    ):
        parse(["--config", str(f)])
    with pytest.raises(UsageError, match="No such file"):
        parse(["--config", str(tmp_path / "missing.yaml")])


def test_the_files_policy_comes_from_the_node_config(tmp_path: Path) -> None:
    from reconciler.desired.filespolicy import DEFAULT_ALLOWED_PATHS, FilesPolicy, ModeBit

    assert parse([]).files_policy == FilesPolicy(DEFAULT_ALLOWED_PATHS, frozenset())
    cfg = tmp_path / "agent.yaml"
    cfg.write_text("files_allow_paths: [/srv/, /etc/app.conf]\nfiles_allow_modes: [setgid]\n")
    c = parse(["--config", str(cfg)])
    assert c.files_policy == FilesPolicy(("/srv/", "/etc/app.conf"), frozenset({ModeBit.SETGID}))
    c = parse(
        ["--config", str(cfg), "--files-allow-paths", "/opt/"],
        {"SWARMKEEPER_FILES_ALLOW_MODES": ""},
    )
    assert c.files_allow_paths == ("/opt/",) and c.files_allow_modes == {ModeBit.SETGID}
    with pytest.raises(UsageError, match="--files-allow-modes: 'sticky' is not one of"):
        parse(["--files-allow-modes", "sticky"])
    with pytest.raises(UsageError, match="--files-allow-paths: 'etc/' is not an absolute path"):
        parse(["--files-allow-paths", "etc/"])
