"""Signature checks without git agree with ``git verify-commit`` on real signed commits: SSH
(allowed signers) and GPG (the agent's own keyring), good, foreign and missing signatures."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from reconciler.revisions.commitsig import verify_commit
from reconciler.revisions.store import build
from reconciler.source import GitSource
from tests.fixtures.gitrepo import StateRepo, git


def _commit(repo: StateRepo, content: str, *sign: str) -> str:
    (repo.work / "units/s.service").write_text(content)
    git(repo.work, "add", "-A")
    git(repo.work, "commit", "-q", *sign, "-m", "c")
    git(repo.work, "push", "-q", "origin", "main")
    return git(repo.work, "rev-parse", "HEAD")


def _gpg_home(path: Path, uid: str) -> Path:
    path.mkdir(mode=0o700)
    subprocess.run(["gpg", "--homedir", str(path), "--batch", "--passphrase", "",
                    "--quick-gen-key", uid, "ed25519", "sign", "never"],
                   check=True, capture_output=True)  # fmt: skip
    return path


@pytest.fixture
def gpg_homes(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(the signer's keyring, an unrelated keyring); their gpg-agents are stopped after."""
    homes = (_gpg_home(tmp_path / "gpg-a", "swarmkeeper-test <test@example.invalid>"),
             _gpg_home(tmp_path / "gpg-b", "other <other@example.invalid>"))  # fmt: skip
    yield homes
    for h in homes:
        subprocess.run(["gpgconf", "--homedir", str(h), "--kill", "gpg-agent"], check=False)


def test_gpg_signatures_match_git(
    state_repo: StateRepo, tmp_path: Path, gpg_homes: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    home, other = gpg_homes
    monkeypatch.setenv("GNUPGHOME", str(home))  # for git commit -S
    signed = _commit(state_repo, "[Service]\nExecStart=/bin/true\n", "-S")
    unsigned = _commit(state_repo, "[Service]\nExecStart=/bin/false\n")
    monkeypatch.delenv("GNUPGHOME")
    src = GitSource(state_repo.url, "main", tmp_path / "mirror")
    src.ensure_commit(unsigned)
    for sha, keyring, trusted in [(signed, home, True), (signed, other, False),
                                  (unsigned, home, False)]:  # fmt: skip
        ours = verify_commit(build(state_repo.work, sha).commit_raw, None, keyring)
        theirs = src.verify(sha, None, keyring)
        assert (ours is None, theirs is None) == (trusted, trusted), (ours, theirs)
    unsigned_why = verify_commit(build(state_repo.work, unsigned).commit_raw, None, home)
    assert unsigned_why == f"commit {unsigned[:12]} is not signed"
    foreign = verify_commit(build(state_repo.work, signed).commit_raw, None, other)
    assert foreign is not None and foreign.startswith(f"commit {signed[:12]} has no trusted")
    # an SSH-only node cannot trust a GPG signature, and says so
    ssh_only = verify_commit(build(state_repo.work, signed).commit_raw, tmp_path / "x", None)
    assert ssh_only == f"commit {signed[:12]} has no trusted signature: no keyring for PGP"


def test_ssh_signatures_match_git(state_repo: StateRepo, tmp_path: Path) -> None:
    keys = {}
    for name in ("good", "bad"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                        str(tmp_path / name)], check=True)  # fmt: skip
        keys[name] = tmp_path / name
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"test@example.invalid {(tmp_path / 'good.pub').read_text()}")
    git(state_repo.work, "config", "gpg.format", "ssh")
    shas = {}
    for name, key in keys.items():
        git(state_repo.work, "config", "user.signingkey", str(key))
        shas[name] = _commit(state_repo, f"[Service]\nX={name}\n", "-S")
    shas["none"] = _commit(state_repo, "[Service]\nX=none\n")
    src = GitSource(state_repo.url, "main", tmp_path / "mirror")
    src.ensure_commit(shas["none"])
    for name, sha in shas.items():
        ours = verify_commit(build(state_repo.work, sha).commit_raw, signers, None)
        theirs = src.verify(sha, signers, None)
        assert (ours is None) == (theirs is None) == (name == "good"), (name, ours, theirs)
        if name == "none":
            assert ours == theirs == f"commit {sha[:12]} is not signed"
