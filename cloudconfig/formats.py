"""Serialise a ``Bundle`` as ``#cloud-config`` (Flatcar's coreos-cloudinit) or Ignition 3.3.0.

Both writers are deterministic: mapping keys sorted, lists in bundle order, no timestamps, so
the same params give byte-identical files (operators keep them and diff them).

- cloud-config: ``write_files`` for files, ``coreos.units`` (``enable``/``command: start``,
  ``drop_ins``) for units, ``coreos.update.reboot_strategy`` for locksmith,
  ``ssh_authorized_keys`` for the ``core`` user. Multi-line text is written as literal blocks.
- Ignition: ``storage.files`` with ``data:`` URLs (percent-encoded, or gzip+base64 for files
  over 1 KiB) and integer modes,
  ``systemd.units`` with ``contents``/``enabled``/``dropins``, ``passwd.users[core]``. Ignition
  runs before systemd starts anything, so enabled units simply start at the first boot.
"""

from __future__ import annotations

import base64
import gzip
import json
import urllib.parse
from typing import Any

import yaml

from cloudconfig.bundle import Bundle

IGNITION_VERSION = "3.3.0"
GZIP_OVER = 1024  # bytes
# Only RFC 3986 unreserved characters stay as they are: Ignition parses strict RFC 2397 URLs.
_SAFE = ""


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _str)


def _text(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    # literal blocks cannot carry trailing spaces, tabs or a CR faithfully through every parser
    if any(c < " " and c != "\n" for c in text) or "\x7f" in text:
        return None  # binary or control characters: base64 is the only faithful form
    if any(line.endswith(" ") for line in text.split("\n")):
        return None
    return text


def cloud_config(b: Bundle) -> bytes:
    files: list[dict[str, Any]] = []
    for f in b.files:
        entry: dict[str, Any] = {"path": f.path, "permissions": f"0{f.mode:o}", "owner": "root"}
        text = _text(f.content)
        if text is None:
            entry["encoding"] = "b64"
            entry["content"] = base64.b64encode(f.content).decode()
        else:
            entry["content"] = text
        files.append(entry)
    units: list[dict[str, Any]] = []
    for u in b.units:
        unit: dict[str, Any] = {"name": u.name}
        if u.content is not None:
            unit["content"] = u.content
        if u.enabled is not None:
            unit["enable"] = u.enabled
        if u.start:
            unit["command"] = "start"
        if u.dropins:
            unit["drop_ins"] = [{"name": n, "content": c} for n, c in u.dropins]
        units.append(unit)
    coreos: dict[str, Any] = {"units": units}
    if b.os == "flatcar":
        coreos["update"] = {"reboot_strategy": b.reboot_strategy}
    doc: dict[str, Any] = {"coreos": coreos, "write_files": files}
    if b.ssh_authorized_keys:
        doc["ssh_authorized_keys"] = list(b.ssh_authorized_keys)
    body = yaml.dump(
        doc, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=4096,
        allow_unicode=True,
    )  # fmt: skip
    header = f"#cloud-config\n# swarmkeeper {b.role} node ({b.os}). Generated: edit params.yml.\n"
    return (header + body).encode()


def data_url(data: bytes) -> str:
    return "data:," + urllib.parse.quote_from_bytes(data, safe=_SAFE)


def _contents(data: bytes) -> dict[str, str]:
    """Small files stay readable; larger ones go gzip+base64 when that is shorter (EC2 caps
    user-data at 16 KiB). mtime=0 keeps the bytes deterministic."""
    plain = data_url(data)
    if len(data) > GZIP_OVER:
        packed = "data:;base64," + base64.b64encode(gzip.compress(data, 9, mtime=0)).decode()
        if len(packed) < len(plain):
            return {"compression": "gzip", "source": packed}
    return {"source": plain}


def ignition(b: Bundle) -> bytes:
    files = [
        {"path": f.path, "mode": f.mode, "overwrite": True, "contents": _contents(f.content)}
        for f in b.files
    ]
    units: list[dict[str, Any]] = []
    for u in b.units:
        unit: dict[str, Any] = {"name": u.name}
        if u.content is not None:
            unit["contents"] = u.content
        if u.enabled is not None:
            unit["enabled"] = u.enabled
        if u.dropins:
            unit["dropins"] = [{"name": n, "contents": c} for n, c in u.dropins]
        units.append(unit)
    doc: dict[str, Any] = {
        "ignition": {"version": IGNITION_VERSION},
        "storage": {"files": files},
        "systemd": {"units": units},
    }
    if b.ssh_authorized_keys:
        doc["passwd"] = {"users": [{"name": "core", "sshAuthorizedKeys": list(b.ssh_authorized_keys)}]}  # fmt: skip
    return (json.dumps(doc, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()
