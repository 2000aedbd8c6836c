"""`make image` for real: build the agent image on a throwaway dockerd and run it.

The test starts its own dockerd (own data/exec roots, socket, pidfile and config file,
``--bridge none --iptables=false``; no other engine is touched), builds the image with
``scripts/build-image.sh --base local`` (a debootstrap'ed Debian bookworm imported with
``docker import``: no registry is reachable here), then runs ``swarmkeeper --version`` in it.
The debootstrap tarball is cached in /var/cache/swarmkeeper (or $SWARMKEEPER_CACHE): the first
run takes a few minutes, later ones ~1 minute.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler import __version__

REPO = Path(__file__).resolve().parent.parent
DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
# The engine is Debian's 20.10: use its own client (a newer client may be first on PATH).
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker"
TAG = "swarmkeeper:imagetest"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@contextlib.contextmanager
def throwaway_dockerd() -> Iterator[dict[str, str]]:
    """A dockerd of our own; yields the environment for a docker client talking to it."""
    root = Path(tempfile.mkdtemp(prefix="skimg-", dir="/tmp"))  # socket path < 108 bytes
    sock = root / "d.sock"
    (root / "daemon.json").write_text(json.dumps({"deprecated-key-path": str(root / "key.json")}))
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - closed in finally
    cmd = [
        DOCKERD,
        "--config-file", str(root / "daemon.json"),
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "--pidfile", str(root / "dockerd.pid"),
        "-H", f"unix://{sock}",
        "--bridge", "none", "--iptables=false", "--ip-masq=false",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env = {**os.environ, "DOCKER_HOST": f"unix://{sock}", "DOCKER": DOCKER}
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"dockerd exited {proc.returncode}:\n{(root / 'dockerd.log').read_text()}"
                )
            if sock.exists():
                r = subprocess.run([DOCKER, "info"], env=env, capture_output=True)
                if r.returncode == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("dockerd did not become ready in 60 s")
            time.sleep(0.2)
        yield env
    finally:
        if proc.poll() is None and DOCKERD.encode() in _cmdline(proc.pid):
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                if DOCKERD.encode() in _cmdline(proc.pid):
                    proc.kill()
                proc.wait(timeout=10)
        log.close()
        # dockerd unmounts its layers on a clean stop; anything left is unmounted by path
        for line in reversed(Path("/proc/self/mounts").read_text().splitlines()):
            mnt = line.split()[1]
            if mnt.startswith(str(root)):
                subprocess.run(["umount", "-l", mnt], check=False, capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_make_image_builds_a_runnable_image_from_a_local_base() -> None:
    with throwaway_dockerd() as env:
        env = {**env, "SWARMKEEPER_BASE": "local"}
        build = subprocess.run(
            [str(REPO / "scripts/build-image.sh"), "--tag", TAG],
            env=env,
            capture_output=True,
            text=True,
        )
        assert build.returncode == 0, build.stderr
        assert build.stdout.strip() == TAG

        def run(*args: str) -> str:
            r = subprocess.run(
                [DOCKER, "run", "--rm", "--network", "none", TAG, *args],
                env=env,
                capture_output=True,
                text=True,
            )
            assert r.returncode == 0, r.stderr
            return r.stdout.strip()

        assert run("swarmkeeper", "--version") == f"swarmkeeper {__version__}"
        # the entry point passes bare arguments to swarmkeeper, as the agent unit does
        assert run("--version") == f"swarmkeeper {__version__}"
        # unprivileged by default; the agent unit asks for root explicitly
        assert run("id", "-u") == "10001"
        # package data made it into the wheel: the facts script the generator embeds
        script = run("python3", "-c", "import cloudconfig.bundle as b; print(b.facts_script()[:9].decode())")  # fmt: skip
        assert script == "#!/bin/sh"
        # the pinned versions, not whatever an index had
        pins = dict(
            line.split("==") for line in (REPO / "constraints.txt").read_text().split() if "==" in line
        )  # fmt: skip
        frozen = dict(line.split("==") for line in run("pip", "freeze").split() if "==" in line)
        for name in ("aiohttp", "pydantic", "PyYAML", "aetcd"):
            assert frozen[name] == pins[name], name
        assert run("git", "--version").startswith("git version")
        # git verifies SSH signatures with ssh-keygen and GPG ones with gpg: without them a
        # node could not check any signed revision under --allowed-signers or --gnupg-home
        tools = run("sh", "-c", "for t in ssh-keygen gpg; do command -v $t; done").split()
        assert [t.rsplit("/", 1)[-1] for t in tools] == ["ssh-keygen", "gpg"], tools
        # the agent's native and heavy dependencies load on this base (grpc, dbus, yaml C)
        mods = "aetcd, aiodocker, aiohttp, dbus_fast, grpc, prometheus_client, yaml"
        assert (
            run("python3", "-c", f"import {mods}; print(yaml.CSafeLoader.__name__)")
            == "CSafeLoader"
        )
        assert "swarmkeeper agent" in run("agent", "--help")
