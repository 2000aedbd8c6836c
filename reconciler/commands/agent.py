"""``swarmkeeper agent``: run the node agent until SIGTERM (see reconciler/agent/agent.py)."""

from __future__ import annotations

import argparse
import os

NAME = "agent"
HELP = "run the node agent: watch git and etcd, keep this node converged, report status"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from reconciler import config

    config.add_options(p)
    config.add_agent_options(p)
    g = p.add_argument_group("agent behaviour")
    g.add_argument("--json", dest="json_logs", action="store_true",
                   help="log JSON lines even on a terminal (the default elsewhere)")  # fmt: skip
    env = os.environ.get
    g.add_argument("--resync-interval", type=float, default=float(env("SWARMKEEPER_RESYNC_INTERVAL", "300")),
                   help="seconds between drift-repair passes when nothing changes (default 300, jittered)")  # fmt: skip
    g.add_argument("--heartbeat-ttl", type=int, default=int(env("SWARMKEEPER_HEARTBEAT_TTL", "10")),
                   help="TTL in seconds of the alive key's lease (default 10)")  # fmt: skip
    g.add_argument("--allowed-signers", default=env("SWARMKEEPER_ALLOWED_SIGNERS"),
                   help="only apply commits with an SSH signature from this allowed-signers file")  # fmt: skip
    g.add_argument("--gnupg-home", default=env("SWARMKEEPER_GNUPG_HOME"),
                   help="only apply commits GPG-signed by a key in this (agent-owned) keyring")  # fmt: skip
    g.add_argument("--webhook-secret-file", default=env("SWARMKEEPER_WEBHOOK_SECRET_FILE"),
                   help="enable POST /hooks/git, checking signatures with the secret in this file")  # fmt: skip
    g.add_argument("--etcd-ca", default=env("SWARMKEEPER_ETCD_CA"),
                   help="CA bundle to verify etcd's certificate (turns TLS on)")  # fmt: skip
    g.add_argument(
        "--etcd-cert", default=env("SWARMKEEPER_ETCD_CERT"), help="client certificate for etcd"
    )
    g.add_argument("--etcd-key", default=env("SWARMKEEPER_ETCD_KEY"), help="client key for etcd")
    g.add_argument("--etcd-user", default=env("SWARMKEEPER_ETCD_USER"),
                   help="etcd user (password from $SWARMKEEPER_ETCD_PASSWORD)")  # fmt: skip
    g.add_argument("--docker", default=env("SWARMKEEPER_DOCKER", ""), metavar="unix:///PATH",
                   help="manage Docker Swarm membership through this engine socket (default: off)")  # fmt: skip
    g.add_argument("--self-unit", default=env("SWARMKEEPER_SELF_UNIT"), metavar="NAME",
                   help="the unit this agent runs as; a revision that changes it restarts it after the pass "
                        "(default: read from the agent's cgroup when systemd runs it directly; 'none': never)")  # fmt: skip
    g.add_argument("--source", choices=["auto", "git"], default=env("SWARMKEEPER_SOURCE", "auto"),
                   help="auto: render from the revision artifacts in etcd, git when a revision has "
                        "none (default); git: always fetch with git")  # fmt: skip
    g.add_argument("--actuator", choices=["systemd", "dry"], default=env("SWARMKEEPER_ACTUATOR", "systemd"),
                   help="dry: record actions instead of running units (benchmarks)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import asyncio
    from pathlib import Path

    from reconciler import config
    from reconciler.errors import UsageError

    cfg = config.load(args)
    _check_trust_files(args)
    secret = None
    if args.webhook_secret_file:
        try:
            secret = Path(args.webhook_secret_file).read_bytes().strip()
        except OSError as e:
            raise UsageError(f"--webhook-secret-file: {e}") from None
        if not secret:
            raise UsageError("--webhook-secret-file is empty")
    # a local path must stay valid whatever the agent's working directory becomes
    repo = cfg.repo if "://" in cfg.repo or ":" in cfg.repo else str(Path(cfg.repo).resolve())
    return asyncio.run(_main(cfg, args, secret, repo))


def _check_trust_files(args: argparse.Namespace) -> None:
    """A signature flag whose file is missing would reject every commit, or worse, be
    silently ignored: stop at start, naming the file."""
    from pathlib import Path

    from reconciler.errors import UsageError

    if args.allowed_signers:
        try:
            data = Path(args.allowed_signers).read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(
                f"--allowed-signers {args.allowed_signers}: cannot read it: {e}"
            ) from None
        if not any(ln.strip() and not ln.lstrip().startswith("#") for ln in data.splitlines()):
            raise UsageError(f"--allowed-signers {args.allowed_signers}: lists no signer")
    if args.gnupg_home and not Path(args.gnupg_home).is_dir():
        raise UsageError(
            f"--gnupg-home {args.gnupg_home}: not a directory (a keyring the agent owns)"
        )


async def _main(cfg: object, args: argparse.Namespace, secret: bytes | None, repo: str) -> int:
    from pathlib import Path

    from reconciler.agent.agent import Agent, AgentSettings
    from reconciler.apply.engine import Engine
    from reconciler.commands._etcd import open_etcd
    from reconciler.config import Config

    assert isinstance(cfg, Config)
    settings = AgentSettings(
        node=cfg.node, role=cfg.role, address=cfg.address, repo=repo, branch=cfg.branch,
        state_dir=cfg.state_dir, etcd=cfg.etcd, prefix=cfg.prefix, listen=cfg.listen,
        poll_interval=cfg.poll_interval, resync_interval=args.resync_interval,
        heartbeat_ttl=args.heartbeat_ttl,
        allowed_signers=Path(args.allowed_signers) if args.allowed_signers else None,
        gnupg_home=Path(args.gnupg_home) if args.gnupg_home else None,
        webhook_secret=secret, docker=args.docker, files_policy=cfg.files_policy,
        source=args.source, self_unit=_self_unit(args.self_unit),
    )  # fmt: skip
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    if args.actuator == "dry":
        from reconciler.actuators.dry import DrySystemd

        sd: object = DrySystemd(cfg.unit_dir or cfg.state_dir / "dry" / "units")
    else:
        from reconciler.actuators.systemd import Scope, Systemd

        sd = await Systemd.connect(Scope(cfg.scope), address=cfg.bus_address, unit_dir=cfg.unit_dir)

    def path(v: str | None) -> Path | None:
        return Path(v) if v else None

    etcd = await open_etcd(cfg.etcd, ca=path(args.etcd_ca), cert=path(args.etcd_cert),
                           key=path(args.etcd_key), user=args.etcd_user)  # fmt: skip
    try:
        engine = Engine(sd, cfg.state_dir, root=cfg.root, unit_dir=cfg.unit_dir)  # type: ignore[arg-type]
        return await Agent(settings, etcd, engine).run()
    finally:
        await etcd.close()
        await sd.close()  # type: ignore[attr-defined]


def _self_unit(option: str | None) -> str:
    from reconciler.agent import selfunit
    from reconciler.desired.schema import check_unit_name
    from reconciler.errors import UsageError

    if option == "none":
        return ""
    if not option:
        return selfunit.detect()
    try:
        check_unit_name(option)
    except ValueError as e:
        raise UsageError(f"--self-unit: {e}") from None
    if not option.endswith(".service") or "@." in option:
        raise UsageError(
            f"--self-unit: {option!r} is not a service (e.g. swarmkeeper-agent.service)"
        )
    return option
