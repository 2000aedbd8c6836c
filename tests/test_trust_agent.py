"""The trust boundary against real etcd, real git and real systemd user managers.

A commit for another cluster or outside the node's files policy is rejected by the node;
a full disk degrades only that node and heals once space is freed; a second agent for the
same node refuses to start; the webhook refuses replays, non-heads, other clusters and
non-JSON; signatures count only when the flag that vouches for their kind is set.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fixtures.agents import REPO_ROOT, agent_for, wait_for
from tests.fixtures.etcd import EtcdServer, etcdctl, free_ports
from tests.fixtures.gitrepo import git, make_state_repo
from tests.fixtures.systemd_user import UserManager, user_manager
from tests.test_agent import PREFIX, SLEEP, Cluster, make_cluster, publish, state

pytestmark = pytest.mark.slow
__all__ = ["make_cluster"]  # the fixture, shared with test_agent


def _rejected(rev: str) -> Callable[[dict[str, object]], bool]:
    return lambda s: s["state"] == "rejected" and s["desired"] == rev


def _get(endpoints: str, key: str) -> str:
    return etcdctl(endpoints, "get", "--print-value-only", key).strip()


@pytest.fixture
def node_manager() -> Iterator[UserManager]:
    short = Path(tempfile.mkdtemp(prefix="skt-"))  # unix socket paths must stay short
    try:
        with user_manager(short, f"skt{os.getpid()}") as um:
            yield um
    finally:
        shutil.rmtree(short, ignore_errors=True)


def test_a_hostile_commit_is_rejected_and_the_agent_lives(
    etcd_server: EtcdServer, make_cluster: Callable[..., Cluster]
) -> None:
    c = make_cluster(etcd_server.endpoint, {"p1": "worker"})  # the default files policy
    good = c.publish_head()
    cluster_yaml = "name: t\nmanagers: 1\n"
    cases = [
        # commits that once passed validation and then killed every agent in a loop
        ({"state/roles/worker.yaml": 'units: [a.service]\nfiles:\n  - {path: "/opt/app/a\\0b", content: x}\n'},
         "state/roles/worker.yaml:3: files.0.path: '/opt/app/a\\x00b' contains a NUL byte"),
        ({"state/roles/worker.yaml": "units: [a.service]\nfiles:\n  - {path: /opt/app/" + "x" * 300 + ", content: x}\n"},
         "state/roles/worker.yaml:3: files.0.path: path component"),
        ({"state/cluster.yaml": cluster_yaml + "rollout: {max_unavailable: " + "9" * 5000 + "}\n"},
         "state/cluster.yaml:3: integer is too long"),
        ({"state/cluster.yaml": cluster_yaml + "prefix: /lab\n"},
         "state/cluster.yaml: prefix is /lab, but the etcd prefix in use is /swarmkeeper"),
        ({"state/roles/worker.yaml": "units: [a.service]\nfiles:\n  - {path: /etc/shadow, content: x}\n"},
         "state/roles/worker.yaml:3: file /etc/shadow is outside this node's files policy"),
        ({"state/roles/worker.yaml": 'units: [a.service]\nfiles:\n  - {path: /opt/app/x, content: x, mode: "4755"}\n'},
         "state/roles/worker.yaml:3: file /opt/app/x: mode 4755 is setuid"),
        ({"state/roles/worker.yaml": 'units: [a.service]\nfiles:\n  - {path: /opt/app/x, content: x, mode: "0666"}\n'},
         "state/roles/worker.yaml:3: file /opt/app/x: mode 0666 is world-writable"),
    ]  # fmt: skip
    for files, expected in cases:
        rev = c.repo.commit({**state(1, {"p1": "worker"}), **files}, "outside")
        publish(c.endpoints, rev)
        c.wait(_rejected(rev), f"{rev[:8]} rejected")
        st = c.status()["p1"]
        assert st["revision"] == good
        problems = [str(p) for p in st["problems"]]  # type: ignore[attr-defined]
        assert any(p.startswith(expected) for p in problems), problems
    assert c.agents["p1"].alive()  # rejected, never crashed
    root = c.agents["p1"].root
    assert not (root / "etc/shadow").exists() and not (root / "opt/app/x").exists()
    # inside the policy, the same node applies it
    ok = c.repo.commit({"state/roles/worker.yaml": "units: [a.service]\nfiles:\n  - {path: /opt/app/x, content: fine}\n",
                        "state/cluster.yaml": cluster_yaml})  # fmt: skip
    publish(c.endpoints, ok)
    c.converged_on(ok)
    assert (root / "opt/app/x").read_text() == "fine"


def test_a_full_disk_degrades_the_node_only_and_it_converges_once_space_is_freed(
    etcd_server: EtcdServer, node_manager: UserManager, tmp_path: Path
) -> None:
    ep = etcd_server.endpoint
    files = state(1, {"f1": "worker"})
    files["state/roles/worker.yaml"] = (
        "units: [a.service, b.service]\nfiles:\n  - {path: /opt/app/small, content: s}\n"
    )
    repo = make_state_repo(tmp_path / "repo", files)
    agent = agent_for(node_manager, tmp_path / "nodes", node="f1", repo=repo.url, etcd=ep)
    # the node's managed files live on a 256 KiB tmpfs, in a mount namespace of the agent's own
    agent.wrap = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                  f"mount -t tmpfs -o size=256k swarmkeeper-test {agent.root} && exec \"$0\" \"$@\""]  # fmt: skip
    agent.start()
    try:
        rev1 = git(repo.work, "rev-parse", "HEAD")
        publish(ep, rev1)

        def status() -> dict[str, object]:
            raw = _get(ep, f"{PREFIX}/nodes/f1/status")
            return json.loads(raw) if raw else {}

        wait_for(
            lambda: status().get("revision") == rev1 and status()["state"] == "converged",
            40,
            "rev1",
        )
        (repo.work / "files").mkdir(exist_ok=True)
        rev2 = repo.commit({
            "files/big.bin": b"\x01" * (600 * 1024),
            "state/roles/worker.yaml": "units: [a.service, b.service]\nfiles:\n  - {path: /opt/app/small, content: s2}\n"
                                       "  - {path: /opt/app/big.bin, source: files/big.bin}\n",
            "units/a.service": SLEEP + "Environment=REV=2\n",
        }, "too big for the node")  # fmt: skip
        publish(ep, rev2)
        wait_for(
            lambda: (
                status().get("state") == "degraded"
                and "No space left" in str(status().get("error"))
            ),
            40,
            "ENOSPC reported",
        )
        st = status()
        assert st["revision"] == rev1 and str(st["error"]).startswith("node: ")
        assert _get(ep, f"{PREFIX}/rollout/failed") == ""  # the revision is not to blame
        assert agent.alive()
        assert (
            "REV=2" not in node_manager.systemctl("show", "-P", "Environment", "a.service").stdout
        )
        # an operator frees space: the backoff retry converges without a new publish
        assert agent.proc is not None
        subprocess.run(["nsenter", "-t", str(agent.proc.pid), "-m", "mount", "-o", "remount,size=4m",
                        str(agent.root)], check=True)  # fmt: skip
        wait_for(
            lambda: status().get("revision") == rev2 and status()["state"] == "converged",
            90,
            "rev2 after freeing space",
        )
        assert _get(ep, f"{PREFIX}/rollout/failed") == ""
        assert "REV=2" in node_manager.systemctl("show", "-P", "Environment", "a.service").stdout
    finally:
        agent.stop()


def test_a_busy_apply_lock_is_a_node_fault_not_a_failed_rollout(
    etcd_server: EtcdServer, make_cluster: Callable[..., Cluster]
) -> None:
    import fcntl

    c = make_cluster(etcd_server.endpoint, {"b1": "worker"})
    good = c.publish_head()
    lock = c.agents["b1"].state_dir / "apply.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # as an operator's `swarmkeeper apply` would
        os.pwrite(fd, b"4242\n", 0)
        rev = c.repo.commit({"units/a.service": SLEEP + "Environment=BUSY=1\n"}, "while busy")
        publish(c.endpoints, rev)
        c.wait(
            lambda s: s["state"] == "degraded" and "pid 4242" in str(s["error"]), "busy reported"
        )
        assert c.status()["b1"]["revision"] == good
        assert _get(c.endpoints, f"{PREFIX}/rollout/failed") == ""
    finally:
        os.close(fd)  # the "operator" is done: the next retry goes through
    c.converged_on(rev, timeout=60)
    assert _get(c.endpoints, f"{PREFIX}/rollout/failed") == ""


def test_a_second_agent_for_the_same_node_refuses_to_start(
    etcd_server: EtcdServer, node_manager: UserManager, tmp_path: Path
) -> None:
    ep = etcd_server.endpoint
    repo = make_state_repo(tmp_path / "repo", state(1, {"i1": "worker"}))
    first = agent_for(node_manager, tmp_path / "a", node="i1", repo=repo.url, etcd=ep)
    second = agent_for(node_manager, tmp_path / "b", node="i1", repo=repo.url, etcd=ep)
    first.start()
    try:
        wait_for(lambda: _get(ep, f"{PREFIX}/nodes/i1/alive") != "", 30, "first agent alive")
        pid = json.loads(_get(ep, f"{PREFIX}/nodes/i1/alive"))["pid"]
        second.start()
        assert second.proc is not None
        assert second.proc.wait(30) == 1
        assert f"node i1 is already run by a live agent (pid {pid}" in second.log()
        assert first.alive()
        # once the first one is gone (SIGTERM revokes its lease), the node is free again
        assert first.stop() == 0
        second.start()
        wait_for(
            lambda: (
                json.loads(_get(ep, f"{PREFIX}/nodes/i1/alive") or "{}").get("pid")
                not in (None, pid)
            ),
            30,
            "second agent alive",
        )
    finally:
        second.stop()
        first.stop()


def test_a_missing_allowed_signers_file_stops_the_agent_at_start(tmp_path: Path) -> None:
    (port,) = free_ports(1)  # nothing listens: the check comes before etcd
    for flag, value, expected in [
        ("--allowed-signers", str(tmp_path / "nope"), "--allowed-signers"),
        ("--gnupg-home", str(tmp_path / "nokeyring"), "--gnupg-home"),
    ]:
        r = subprocess.run(
            [sys.executable, "-m", "reconciler", "agent", "--node", "x", "--repo", str(tmp_path),
             "--etcd", f"127.0.0.1:{port}", "--scope", "user", "--state-dir", str(tmp_path / "s"),
             "--listen", "off", flag, value],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 1, r.stderr
        assert expected in r.stderr and value in r.stderr
        assert "Traceback" not in r.stderr
    empty = tmp_path / "empty_signers"
    empty.write_text("# nobody yet\n")
    r = subprocess.run(
        [sys.executable, "-m", "reconciler", "agent", "--node", "x", "--repo", str(tmp_path),
         "--etcd", f"127.0.0.1:{port}", "--listen", "off", "--allowed-signers", str(empty)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1 and "lists no signer" in r.stderr


# -- signatures -------------------------------------------------------------------------


def _gpg(home: Path, *args: str, stdin: bytes | None = None) -> bytes:
    out = subprocess.run(["gpg", "--homedir", str(home), "--batch", "--yes", *args],
                         input=stdin, capture_output=True, check=True, timeout=60)  # fmt: skip
    return out.stdout


@pytest.fixture
def gpg_key(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A GPG home with one signing key: (home, fingerprint). Its agent is killed after."""
    home = Path(tempfile.mkdtemp(prefix="skg-"))  # the agent's socket path must stay short
    home.chmod(0o700)
    try:
        _gpg(home, "--passphrase", "", "--quick-gen-key", "Test <test@example.invalid>",
             "ed25519", "sign", "never")  # fmt: skip
        fpr = next(
            ln.split(":")[9]
            for ln in _gpg(home, "--with-colons", "--list-secret-keys").decode().splitlines()
            if ln.startswith("fpr:")
        )
        yield home, fpr
    finally:
        subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "all"], check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_gpg_signatures_count_only_with_gnupg_home(
    etcd_server: EtcdServer, make_cluster: Callable[..., Cluster], tmp_path: Path,
    gpg_key: tuple[Path, str], request: pytest.FixtureRequest,
) -> None:  # fmt: skip
    gpg_home, fpr = gpg_key
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "ssh")], check=True
    )
    signers = keys / "allowed_signers"
    signers.write_text(f"test@example.invalid {(keys / 'ssh.pub').read_text().strip()}\n")
    # the agent user's own ~/.gnupg trusts the GPG key: that must not matter
    agent_home = tmp_path / "agent-home"
    (agent_home / ".gnupg").mkdir(parents=True, mode=0o700)
    request.addfinalizer(lambda: subprocess.run(
        ["gpgconf", "--homedir", str(agent_home / ".gnupg"), "--kill", "all"], check=False))  # fmt: skip
    _gpg(agent_home / ".gnupg", "--import", stdin=_gpg(gpg_home, "--export", fpr))
    c = make_cluster(etcd_server.endpoint, {"g1": "worker", "g2": "worker"},
                     per_node_extra={"g1": ["--allowed-signers", str(signers)],
                                     "g2": ["--gnupg-home", str(agent_home / ".gnupg")]})  # fmt: skip
    for a in c.agents.values():
        a.stop()
        a.env = {k: v for k, v in a.env.items() if k != "GNUPGHOME"} | {"HOME": str(agent_home)}
        a.start()
    w = c.repo.work
    env_gpg = {"GNUPGHOME": str(gpg_home)}

    def commit(fmt: str, key: str, content: str) -> str:
        (w / "units/a.service").write_text(content)
        git(w, "add", "-A")
        subprocess.run(["git", "-c", f"gpg.format={fmt}", "-c", f"user.signingkey={key}", "commit",
                        "-q", "-S", "-m", f"{fmt} signed"], cwd=w, check=True,
                       env={**os.environ, **env_gpg, "HOME": str(w), "GIT_AUTHOR_NAME": "t",
                            "GIT_AUTHOR_EMAIL": "test@example.invalid", "GIT_COMMITTER_NAME": "t",
                            "GIT_COMMITTER_EMAIL": "test@example.invalid"})  # fmt: skip
        git(w, "push", "-q", "origin", "main")
        return git(w, "rev-parse", "HEAD")

    gpg_rev = commit("openpgp", fpr, SLEEP + "Environment=S=gpg\n")
    publish(c.endpoints, gpg_rev)
    c.converged_on(gpg_rev, nodes=["g2"])  # --gnupg-home: its own keyring vouches
    c.wait(
        lambda s: s["state"] == "rejected" and s["desired"] == gpg_rev, "gpg refused", nodes=["g1"]
    )
    assert "only SSH signatures by --allowed-signers count" in str(c.status()["g1"]["error"])
    ssh_rev = commit("ssh", str(keys / "ssh"), SLEEP + "Environment=S=ssh\n")
    publish(c.endpoints, ssh_rev)
    c.converged_on(ssh_rev, nodes=["g1"])
    c.wait(
        lambda s: s["state"] == "rejected" and s["desired"] == ssh_rev, "ssh refused", nodes=["g2"]
    )
    assert "no --allowed-signers is set" in str(c.status()["g2"]["error"])


# -- the webhook ------------------------------------------------------------------------


def test_the_webhook_refuses_replays_non_heads_other_clusters_and_non_json(
    etcd_server: EtcdServer, make_cluster: Callable[..., Cluster], tmp_path: Path
) -> None:
    secret = tmp_path / "hook-secret"
    secret.write_text("hook-s3cret\n")
    (port,) = free_ports(1)
    c = make_cluster(etcd_server.endpoint, {"w1": "worker"},
                     extra=["--listen", f"127.0.0.1:{port}", "--webhook-secret-file", str(secret)])  # fmt: skip

    def post(
        after: str, delivery: str, ctype: str = "application/json"
    ) -> tuple[int, dict[str, object]]:
        body = json.dumps({"ref": "refs/heads/main", "after": after}).encode()
        sig = "sha256=" + hmac.new(b"hook-s3cret", body, hashlib.sha256).hexdigest()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/hooks/git", data=body, method="POST",
                                     headers={"X-Hub-Signature-256": sig, "Content-Type": ctype,
                                              "X-GitHub-Delivery": delivery})  # fmt: skip
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def up() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).close()
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    wait_for(up, 30, "agent http up", interval=0.3)
    desired = f"{PREFIX}/desired/revision"
    old = git(c.repo.work, "rev-parse", "HEAD")
    rev = c.repo.commit({"units/a.service": SLEEP + "Environment=HOOK=1\n"}, "pushed")
    assert post(rev, "d-form", "application/x-www-form-urlencoded")[0] == 415
    status, doc = post(rev, "d-1")
    assert status == 200 and doc["published"] == rev
    assert _get(c.endpoints, desired) == rev
    # the same delivery again, even for the current head: refused as a replay
    assert post(rev, "d-1")[0] == 409
    # an old commit under a fresh delivery id: not the head of the branch
    status, doc = post(old, "d-2")
    assert status == 422 and "is not the head of main" in str(doc["error"])
    # a commit only on another branch, claimed to be main's
    git(c.repo.work, "checkout", "-q", "-b", "side")
    side = c.repo.commit({"units/a.service": SLEEP + "Environment=SIDE=1\n"}, "side")
    git(c.repo.work, "push", "-q", "origin", "side")
    git(c.repo.work, "checkout", "-q", "main")
    status, doc = post(side, "d-3")
    assert status == 422 and "is not the head of main" in str(doc["error"])
    # the head of main, but for another cluster's prefix
    lab = c.repo.commit({"state/cluster.yaml": "name: t\nmanagers: 1\nprefix: /lab\n"}, "lab")
    status, doc = post(lab, "d-4")
    assert status == 422 and "prefix is /lab, but the etcd prefix in use is /swarmkeeper" in str(
        doc["error"]
    )
    assert _get(c.endpoints, desired) == rev
    assert _get(c.endpoints, "/lab/desired/revision") == ""
    c.converged_on(rev)
