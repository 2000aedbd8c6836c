"""Check a raw commit object's signature without git, the way ``git verify-commit`` does.

git signs the commit object without its ``gpgsig`` header and stores the signature in that
header; verifying hands that payload and the signature to the signing tool:

- SSH (``-----BEGIN SSH SIGNATURE-----``): ``ssh-keygen -Y find-principals`` names the
  principals of the allowed signers file that hold the key, then ``ssh-keygen -Y verify``
  (namespace ``git``, checked at the committer's time, as git does) must accept one of them;
- PGP: ``gpg --verify`` against the agent's own keyring must report a good signature.

Returns the same words as ``GitSource.verify``: None when trusted, else why not.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from reconciler.revisions.artifact import ArtifactMismatch, parse_commit

SSH_BEGIN = b"-----BEGIN SSH SIGNATURE-----"


def verify_commit(
    commit_raw: bytes,
    allowed_signers: Path | None,
    gnupg_home: Path | None,
    *,
    timeout: float = 30.0,
) -> str | None:
    try:
        commit = parse_commit(commit_raw)
    except ArtifactMismatch as e:
        return str(e)
    short = commit.id.decode()[:12]
    sig = commit.gpgsig
    if not sig:
        return f"commit {short} is not signed"
    payload = commit.raw_without_sig()
    with tempfile.TemporaryDirectory(prefix="sk-sig-") as tmp:
        sig_path = Path(tmp) / "sig"
        sig_path.write_bytes(sig)
        try:
            if sig.lstrip().startswith(SSH_BEGIN):
                if allowed_signers is None:
                    return f"commit {short} has no trusted signature: no allowed signers for SSH"
                when = time.strftime("%Y%m%d%H%M%S", time.gmtime(commit.commit_time))
                why = _ssh(sig_path, payload, allowed_signers, when, timeout)
            else:
                if gnupg_home is None:
                    return f"commit {short} has no trusted signature: no keyring for PGP"
                why = _gpg(sig_path, payload, gnupg_home, timeout)
        except subprocess.TimeoutExpired:
            return "signature check timed out"
        except OSError as e:
            return f"commit {short}: cannot check its signature: {e}"
    return None if why is None else f"commit {short} has no trusted signature: {why}"


def _ssh(sig: Path, payload: bytes, signers: Path, when: str, timeout: float) -> str | None:
    opt = f"-Overify-time={when}Z"
    found = subprocess.run(
        ["ssh-keygen", "-Y", "find-principals", "-f", str(signers), "-s", str(sig), opt],
        capture_output=True, check=False, timeout=timeout,
    )  # fmt: skip
    principals = [p for p in found.stdout.decode(errors="replace").splitlines() if p.strip()]
    if found.returncode != 0 or not principals:
        return " ".join(found.stderr.decode(errors="replace").split())[:300] or "unknown key"
    last = ""
    for principal in principals:
        out = subprocess.run(
            ["ssh-keygen", "-Y", "verify", "-f", str(signers), "-I", principal, "-n", "git",
             "-s", str(sig), opt],
            input=payload, capture_output=True, check=False, timeout=timeout,
        )  # fmt: skip
        if out.returncode == 0:
            return None
        last = " ".join((out.stderr or out.stdout).decode(errors="replace").split())[:300]
    return last or "signature does not verify"


def _gpg(sig: Path, payload: bytes, home: Path, timeout: float) -> str | None:
    out = subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--status-fd", "1",
         "--verify", str(sig), "-"],
        input=payload, capture_output=True, check=False, timeout=timeout,
        env={**os.environ, "GNUPGHOME": str(home)},
    )  # fmt: skip
    status = out.stdout.decode(errors="replace")
    if out.returncode == 0 and "[GNUPG:] GOODSIG" in status and "[GNUPG:] VALIDSIG" in status:
        return None
    return " ".join(out.stderr.decode(errors="replace").split())[:300] or "bad signature"
