"""One sandbox node: its copy-on-write root, the real Ignition, and its systemd-nspawn boot.

``prepare`` mounts an overlay of the cached root and turns it into a machine that has never
booted: ``/etc/machine-id`` says ``uninitialized`` (systemd's first-boot marker, so it applies
the presets Ignition writes, as on Flatcar), a preset file disables whatever Ignition does not
enable (Debian's packages would otherwise start their own etcd), no DNS server (nothing may
leave the sandbox; a failed image pull then fails at once). ``ignite`` runs Debian's real
Ignition binary, stages ``fetch-offline`` then ``files``, against that root; Ignition always
relabels for SELinux, so ``/etc/selinux/config`` says disabled and a no-op ``setfiles`` is
first on its PATH.

``boot`` starts ``systemd-nspawn --boot`` detached, in the node's network namespace and its own
cgroups (both hierarchies), and returns nspawn's pid and the node's PID 1 as the host sees it.
What dockerd inside needs from nspawn, measured here: the unified cgroup hierarchy
(``SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1``; the legacy controllers are read-only in the
container), ``CAP_NET_ADMIN`` (nspawn drops it with ``--network-namespace-path``; dockerd's
host-network sandbox fails "operation not permitted") and ``CAP_IPC_LOCK`` (the Vault unit's
``--cap-add IPC_LOCK``: runc cannot grant what the node lacks), the keyring system calls (runc joins a
session keyring) and a real filesystem for ``/var/lib/docker`` (overlay2 cannot stack on the
node's overlay root), bound from the node's directory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from reconciler.sandbox import host

IGNITION = Path("/usr/lib/dracut/modules.d/30ignition/ignition")
NSPAWN = Path("/usr/bin/systemd-nspawn")
PRESET = "# the sandbox's stand-in OS enables only what Ignition enables, like Flatcar\ndisable *\n"
NSPAWN_ENV = {"SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
# Runs first: move this shell into the node's own cgroups, then exec nspawn (same pid).
OUTER = 'set -e; for cg in $SK_CGROUPS; do echo $$ > "$cg/cgroup.procs"; done; exec "$@"'


@dataclass(frozen=True, slots=True)
class Paths:
    dir: Path

    @property
    def root(self) -> Path:
        return self.dir / "root"

    @property
    def upper(self) -> Path:
        return self.dir / "upper"

    @property
    def work(self) -> Path:
        return self.dir / "work"

    @property
    def docker(self) -> Path:
        return self.dir / "docker"

    @property
    def ignition(self) -> Path:
        return self.dir / "ignition"

    @property
    def log(self) -> Path:
        return self.dir / "nspawn.log"


def prepare(lower: Path, p: Paths, name: str) -> None:
    host.mount_overlay(lower, p.upper, p.work, p.root)
    etc = p.root / "etc"
    (etc / "hostname").write_text(name + "\n")
    (etc / "machine-id").write_text("uninitialized\n")
    (etc / "resolv.conf").unlink(missing_ok=True)
    (etc / "resolv.conf").write_text("# no DNS inside the sandbox\n")
    (etc / "systemd/system-preset").mkdir(parents=True, exist_ok=True)
    (etc / "systemd/system-preset/30-swarmkeeper-sandbox.preset").write_text(PRESET)
    (etc / "selinux").mkdir(exist_ok=True)
    (etc / "selinux/config").write_text("SELINUX=disabled\nSELINUXTYPE=targeted\n")
    p.docker.mkdir(parents=True, exist_ok=True)


def ignite(p: Paths, config: Path) -> None:
    """Ignition's fetch-offline and files stages, for real, with ``config`` as user-data."""
    scratch = p.ignition
    (scratch / "bin").mkdir(parents=True, exist_ok=True)
    shim = scratch / "bin/setfiles"
    shim.write_text(
        "#!/bin/sh\n# SELinux is disabled on the sandbox's nodes: nothing to relabel\ncat >/dev/null\n"
    )
    shim.chmod(0o755)
    common = ["-platform", "file", "-config-cache", str(scratch / "config.json"),
              "-state-file", str(scratch / "state"), "-log-to-stdout"]  # fmt: skip
    env = ["env", f"IGNITION_CONFIG_FILE={config}", f"PATH={scratch / 'bin'}:{host.PATH}"]
    for stage, extra in (("fetch-offline", ["-neednet", str(scratch / "neednet")]),
                         ("files", ["-root", str(p.root)])):  # fmt: skip
        out = host.run([*env, str(IGNITION), "-stage", stage, *common, *extra], check=False)
        (scratch / f"{stage}.log").write_bytes(out.stdout + out.stderr)
        if out.returncode != 0:
            tail = (out.stdout + out.stderr).decode(errors="replace").strip().splitlines()[-3:]
            raise host.SandboxError(
                f"ignition -stage {stage} failed ({out.returncode}) for {p.root}: "
                + " / ".join(tail)
                + f" (full log: {scratch / f'{stage}.log'})"
            )


@dataclass(frozen=True, slots=True)
class Booted:
    nspawn_pid: int
    leader_pid: int


def boot(p: Paths, name: str, machine: str, netns: str, cgroup: str, timeout: float = 60.0) -> Booted:  # fmt: skip
    cgroups = host.make_cgroups(cgroup)
    argv = [str(NSPAWN), "-D", str(p.root), "--boot", "--register=no", "--keep-unit",
            "--console=passive", "-M", machine, f"--hostname={name}",
            "--capability=CAP_NET_ADMIN,CAP_IPC_LOCK", "--system-call-filter=@keyring bpf",
            "--resolv-conf=off", "--timezone=off",
            f"--network-namespace-path={host.NETNS_DIR / netns}",
            f"--bind={p.docker}:/var/lib/docker"]  # fmt: skip
    env = {**NSPAWN_ENV, "SK_CGROUPS": " ".join(map(str, cgroups))}
    pid = host.daemon(["sh", "-c", OUTER, "sh", *argv], p.log, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not host.alive(pid):
            tail = p.log.read_text(errors="replace")[-2000:] if p.log.exists() else ""
            raise host.SandboxError(f"systemd-nspawn for {name} exited at once:\n{tail}")
        for child in host.children(pid):
            if host.comm(child) == "systemd":
                return Booted(pid, child)
        time.sleep(0.02)
    raise host.SandboxError(f"systemd-nspawn started no systemd for {name} in {timeout:.0f} s")


def nsenter(leader_pid: int, *argv: str) -> list[str]:
    return ["nsenter", "-t", str(leader_pid), "-a", "env", "-i", f"PATH={host.PATH}",
            "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", *argv]  # fmt: skip


def is_active(leader_pid: int, *units: str) -> bool:
    out = host.run(nsenter(leader_pid, "systemctl", "is-active", *units), check=False)
    states = out.stdout.decode().split()
    return out.returncode == 0 and len(states) == len(units)


def wait_active(leader_pid: int, units: tuple[str, ...], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_active(leader_pid, *units):
            return
        time.sleep(0.2)
    raise host.SandboxError(f"{what}: {', '.join(units)} not active after {timeout:.0f} s")


def shutdown(nspawn_pid: int, cgroup: str, timeout: float = 20.0) -> None:
    """An orderly halt (SIGTERM to nspawn), then whatever is left of the cgroup is killed."""
    host.stop_process(nspawn_pid, str(NSPAWN), timeout=timeout)
    host.kill_cgroup(cgroup)


def crash(cgroup: str) -> None:
    """Pull the plug: every process of the node dies at once, nothing shuts down."""
    host.kill_cgroup(cgroup)
