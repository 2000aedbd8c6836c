"""GitSource against real repositories: mirror, fetch-on-demand, signatures."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from reconciler.errors import SourceError
from reconciler.source import GitSource
from tests.fixtures.gitrepo import StateRepo, git


def test_fetches_only_when_the_commit_is_missing(state_repo: StateRepo, tmp_path: Path) -> None:
    src = GitSource(state_repo.url, "main", tmp_path / "mirror")
    head = git(state_repo.work, "rev-parse", "HEAD")
    assert src.ensure_commit(head) == head
    assert src.fetches == 1  # the initial mirror fetch
    assert src.ensure_commit(head) == head
    assert src.fetches == 1  # known commit: no fetch
    new = state_repo.commit({"units/b.service": "[Service]\nExecStart=/bin/true\n"})
    assert src.ensure_commit(new) == new
    assert src.fetches == 2
    assert "units/b.service" in src.tree(new).files
    # a restart of the agent reuses the mirror
    again = GitSource(state_repo.url, "main", tmp_path / "mirror")
    assert again.ensure_commit(new) == new and again.fetches == 0


def test_branch_head_and_unreachable_remote(state_repo: StateRepo, tmp_path: Path) -> None:
    src = GitSource(state_repo.url, "main", tmp_path / "mirror")
    first = src.branch_head()
    new = state_repo.commit({"units/c.service": "[Service]\nExecStart=/bin/true\n"})
    assert src.branch_head() == new != first
    with pytest.raises(SourceError, match="not in"):
        src.ensure_commit("main~5")  # a name is resolved at once
    # a full sha (what etcd publishes) is fetched for, then found missing when read:
    # no process is spent resolving it in between
    before = src.fetches
    with pytest.raises(SourceError, match=r"revision '0{40}' not found"):
        src.tree(src.ensure_commit("0" * 40))
    assert src.fetches == before + 1
    state_repo.remote.rename(state_repo.remote.with_name("gone.git"))
    with pytest.raises(SourceError, match=r"git fetch .*does not appear to be a git repository"):
        src.branch_head()
    # what was fetched before stays readable: the node keeps its last good state
    assert "units/c.service" in src.tree(new).files


def _ssh_key(tmp_path: Path, name: str) -> tuple[Path, str]:
    key = tmp_path / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, (tmp_path / f"{name}.pub").read_text().strip()


def test_ssh_signatures(state_repo: StateRepo, tmp_path: Path) -> None:
    good_key, good_pub = _ssh_key(tmp_path, "good")
    bad_key, _ = _ssh_key(tmp_path, "bad")
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"test@example.invalid {good_pub}\n")
    w = state_repo.work
    git(w, "config", "gpg.format", "ssh")

    def signed(key: Path, content: str) -> str:
        git(w, "config", "user.signingkey", str(key))
        (w / "units/s.service").write_text(content)
        git(w, "add", "-A")
        git(w, "commit", "-q", "-S", "-m", "signed")
        git(w, "push", "-q", "origin", "main")
        return git(w, "rev-parse", "HEAD")

    good = signed(good_key, "[Service]\nExecStart=/bin/true\n")
    bad = signed(bad_key, "[Service]\nExecStart=/bin/false\n")
    unsigned = state_repo.commit({"units/u.service": "[Service]\nExecStart=/bin/true\n"})
    src = GitSource(state_repo.url, "main", tmp_path / "mirror")
    src.ensure_commit(unsigned)
    assert src.verify(good, signers, None) is None
    bad_why = src.verify(bad, signers, None)
    assert bad_why is not None and "no trusted signature" in bad_why
    assert src.verify(unsigned, signers, None) == f"commit {unsigned[:12]} is not signed"


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        ("gpgsig -----BEGIN SSH SIGNATURE-----", "ssh"),
        ("gpgsig -----BEGIN PGP SIGNATURE-----", "gpg"),
        ("gpgsig-sha256 -----BEGIN PGP SIGNATURE-----", "gpg"),
        ("gpgsig -----BEGIN SIGNED MESSAGE-----", "x509"),
        ("gpgsig -----BEGIN SOMETHING-----", "unknown"),
        (None, None),
    ],
)
def test_signature_kind(header: str | None, kind: str | None) -> None:
    from reconciler.source import signature_kind

    lines = ["tree " + "a" * 40, "author a <a@b> 1 +0000", "committer a <a@b> 1 +0000"]
    if header:
        lines += [header, " ", " -----END-----"]
    body = "\n".join(lines) + "\n\ngpgsig -----BEGIN SSH SIGNATURE----- in the message\n"
    assert signature_kind(body) == kind
