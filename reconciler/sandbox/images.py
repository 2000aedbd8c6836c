"""The images the generated units name, built here and imported into each node's dockerd.

No registry is reachable, so every image is a root tarball made on this machine and
``docker import``ed inside the node (what scripts/build-image.sh does for its local base):

* ``swarmkeeper-etcd:sandbox``: the node root's own etcd and etcdctl (Debian's 3.4) with the
  C library they link; the units run ``IMAGE etcd ...`` and ``IMAGE etcdctl ...`` unchanged.
* ``swarmkeeper:sandbox``: the agent image's contents (a venv in /opt/swarmkeeper with the
  pinned dependencies, git, the image's entry point) on a trimmed copy of the node root
  instead of ``python:3.11-slim``. The dependencies are cached by the hash of
  constraints.txt; this checkout's own wheel goes on top at every ``up``.
* ``swarmkeeper-vault-standin:sandbox``: the same tarball with an entry point that answers
  Vault's seal-status like an unsealed Vault (``vault_standin.py``): no Vault binary exists
  here. It takes ``server -config=...`` as the unit passes it.

Cached under ``/var/cache/swarmkeeper/sandbox`` (``SWARMKEEPER_CACHE``), beside the node root.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import sys
import tarfile
from pathlib import Path

from reconciler.sandbox import host
from reconciler.sandbox.spec import AGENT_IMAGE, ETCD_IMAGE, VAULT_IMAGE

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPE = "3"
VENV = "opt/swarmkeeper"
# what the agent never needs from the node root: engines, etcd, docs, perl (only Debian's
# tooling uses it; git's fetch and archive do not): ~75 MB less to import into every node
TRIM = ("./usr/bin/docker*", "./usr/bin/containerd*", "./usr/bin/ctr", "./usr/bin/runc",
        "./usr/bin/etcd*", "./usr/bin/dnet", "./usr/sbin/dockerd", "./usr/sbin/docker-proxy",
        "./usr/share/doc", "./usr/share/man", "./usr/share/locale", "./usr/share/info",
        "./var/cache/*", "./var/lib/docker", "./var/lib/etcd", "./usr/sbin/ovrouter",
        "./usr/sbin/runc", "./usr/lib/x86_64-linux-gnu/perl", "./usr/share/perl",
        "./usr/lib/python3.11/test")  # fmt: skip
ENV_PATH = f"PATH=/{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
AGENT_CHANGES = (f"ENV {ENV_PATH}", "ENV PYTHONUNBUFFERED=1", "ENV PYTHONDONTWRITEBYTECODE=1",
                 'ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]', 'CMD ["--help"]')  # fmt: skip
VAULT_CHANGES = (f"ENV {ENV_PATH}", 'ENTRYPOINT ["/usr/bin/python3", "/usr/local/bin/vault-standin"]')  # fmt: skip


def cache_root() -> Path:
    """Where the sandbox keeps what takes minutes to build (``$SWARMKEEPER_CACHE``)."""
    return Path(os.environ.get("SWARMKEEPER_CACHE", "/var/cache/swarmkeeper"))


def cache_dir() -> Path:
    return cache_root() / "sandbox"


def _stamp(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def etcd_tarball(root: Path) -> Path:
    """The etcd image's root as a tarball, rebuilt when the node root changes."""
    stamp = _stamp((root / ".complete").read_bytes(), RECIPE.encode())
    out = cache_dir() / f"etcd-{stamp}.tar"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    with tarfile.open(tmp, "w") as tar:
        for d in ("tmp", "etc", "var/lib/etcd", "usr/bin", "lib/x86_64-linux-gnu", "lib64"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        for f in ("usr/bin/etcd", "usr/bin/etcdctl", "lib/x86_64-linux-gnu/libc.so.6",
                  "lib64/ld-linux-x86-64.so.2"):  # fmt: skip
            tar.add(str((root / f).resolve()), arcname=f)
        data = b"root:x:0:0:root:/root:/bin/sh\n"
        info = tarfile.TarInfo("etc/passwd")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    tmp.rename(out)
    return out


def _wheelhouse(dest: Path, deps: bool) -> None:
    argv = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
            "-c", str(REPO_ROOT / "constraints.txt"), "--wheel-dir", str(dest)]  # fmt: skip
    host.run([*argv, *([] if deps else ["--no-deps"]), str(REPO_ROOT)], timeout=600)


def agent_base(root: Path) -> Path:
    """The node root, trimmed, with a venv holding the pinned dependencies (cached)."""
    constraints = (REPO_ROOT / "constraints.txt").read_bytes()
    stamp = _stamp((root / ".complete").read_bytes(), constraints, RECIPE.encode())
    base = cache_dir() / f"agent-base-{stamp}"
    if (base / ".complete").exists():
        return base
    work = cache_dir() / f"agent-base-{stamp}.build"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    excludes = [f"--exclude={t}" for t in TRIM]
    host.run(["sh", "-c", 's=$1 d=$2; shift 2; tar --numeric-owner -C "$s" -c "$@" . | tar -C "$d" -xp', "sh", str(root),
              str(work), *excludes], timeout=600)  # fmt: skip
    wheels = work / "tmp/wheels"
    _wheelhouse(wheels, deps=True)
    shutil.copy(REPO_ROOT / "constraints.txt", work / "tmp/constraints.txt")
    chroot = ["chroot", str(work), "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    host.run([*chroot, "python3", "-m", "venv", f"/{VENV}"])
    host.run([*chroot, f"/{VENV}/bin/pip", "install", "--quiet", "--no-index", "--find-links",
              "/tmp/wheels", "-c", "/tmp/constraints.txt", "swarmkeeper"], timeout=600)  # fmt: skip
    shutil.rmtree(wheels)
    (work / "tmp/constraints.txt").unlink()
    shutil.copy(REPO_ROOT / "scripts/docker-entrypoint.sh", work / "usr/local/bin/")
    (work / ".complete").write_text(stamp + "\n")
    shutil.rmtree(base, ignore_errors=True)
    work.rename(base)
    for old in cache_dir().glob("agent-base-*"):  # bases of older constraints or recipes
        if old != base and not old.name.endswith(".build"):
            shutil.rmtree(old, ignore_errors=True)
    return base


def agent_tarball(root: Path, out_dir: Path) -> Path:
    """The agent image's root with this checkout's swarmkeeper, as a tarball in ``out_dir``."""
    base = agent_base(root)
    wheels = out_dir / "wheel"
    _wheelhouse(wheels, deps=False)
    upper, work, merged = out_dir / "upper", out_dir / "work", out_dir / "merged"
    host.mount_overlay(base, upper, work, merged)
    try:
        (merged / "tmp/sk").mkdir(parents=True, exist_ok=True)
        for w in wheels.glob("*.whl"):
            shutil.copy(w, merged / "tmp/sk")
        host.run(["chroot", str(merged), "/usr/bin/env", "-i", "PATH=/usr/bin:/bin", "sh", "-c",
                  f"/{VENV}/bin/pip install --quiet --no-index --no-deps --force-reinstall "
                  "/tmp/sk/*.whl && rm -rf /tmp/sk"], timeout=300)  # fmt: skip
        # the vault stand-in follows this checkout too
        shutil.copy(Path(__file__).with_name("vault_standin.py"),
                    merged / "usr/local/bin/vault-standin")  # fmt: skip
        out = out_dir / "agent.tar"
        host.run(["tar", "--numeric-owner", "-C", str(merged), "-cf", str(out), "."], timeout=600)
    finally:
        host.umount(merged)
        shutil.rmtree(upper, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(wheels, ignore_errors=True)
        merged.rmdir()
    return out


def _import(leader_pid: int, tar: Path, name: str, changes: tuple[str, ...]) -> None:
    argv = ["nsenter", "-t", str(leader_pid), "-a", "docker", "import"]
    for c in changes:
        argv += ["--change", c]
    with open(tar, "rb") as f:
        host.run([*argv, "-", name], stdin=f, timeout=600)


def load_into(leader_pid: int, etcd_tar: Path, agent_tar: Path) -> None:
    """Import the three images into the node's dockerd (through the node's namespaces).

    The Vault stand-in is the agent image with another entry point: a commit of a stopped
    container shares the agent's layer instead of importing the tarball twice.
    """
    _import(leader_pid, etcd_tar, ETCD_IMAGE, ("ENV PATH=/usr/bin",))
    _import(leader_pid, agent_tar, AGENT_IMAGE, AGENT_CHANGES)
    docker = ["nsenter", "-t", str(leader_pid), "-a", "docker"]
    host.run([*docker, "rm", "-f", "vault-standin-build"], check=False)
    host.run([*docker, "create", "--name", "vault-standin-build", AGENT_IMAGE])
    commit = [*docker, "commit"]
    for c in VAULT_CHANGES:
        commit += ["--change", c]
    host.run([*commit, "vault-standin-build", VAULT_IMAGE])
    host.run([*docker, "rm", "vault-standin-build"])
