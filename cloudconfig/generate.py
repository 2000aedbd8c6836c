"""From a params file to the user-data files, and writing them atomically.

``generate(loaded, formats)`` is pure (name -> bytes); ``write_outputs`` puts them in a
directory, each through a temp file in the same directory, fsync and rename, so a crash
never leaves a half-written user-data file next to good ones.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable

from cloudconfig.bundle import ROLES, build
from cloudconfig.formats import cloud_config, ignition
from cloudconfig.params import LoadedParams, load_params


def generate(loaded: LoadedParams, formats: Iterable[str]) -> dict[str, bytes]:
    """The output files by name (manager.yml, worker.yml, manager.ign, worker.ign)."""
    out: dict[str, bytes] = {}
    for fmt in formats:
        for role in ROLES:
            if fmt == "cloud-config":
                out[f"{role}.yml"] = cloud_config(build(loaded, role, "cloud-config"))
            elif fmt == "ignition":
                out[f"{role}.ign"] = ignition(build(loaded, role, "ignition"))
            else:
                raise ValueError(f"unknown format {fmt!r}")
    return out


def load_params_file(path: str) -> LoadedParams:
    """Read and validate a params file (raises InvalidDesiredState or OSError)."""
    with open(path, "rb") as f:
        data = f.read()
    return load_params(path, data, os.path.dirname(os.path.abspath(path)))


def atomic_write(path: str, data: bytes, mode: int = 0o644) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_outputs(out_dir: str, files: dict[str, bytes]) -> list[str]:
    # user-data may inline a secret (slack.webhook_url): readable by the owner only
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name in sorted(files):
        path = os.path.join(out_dir, name)
        atomic_write(path, files[name], 0o600)
        written.append(path)
    return written
