"""NodeSpec as plain data (for ``render --json``, status and tests): pure and deterministic."""

from __future__ import annotations

import base64
from typing import Any

from reconciler.models import NodeSpec


def _text(data: bytes) -> dict[str, str]:
    try:
        return {"content": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"content_base64": base64.b64encode(data).decode()}


def spec_to_dict(spec: NodeSpec) -> dict[str, Any]:
    return {
        "node": spec.node,
        "role": spec.role.value,
        "revision": spec.revision,
        "cluster": {
            "name": spec.cluster.name,
            "managers": spec.cluster.managers,
            "prefix": spec.cluster.prefix,
            "max_unavailable": spec.cluster.max_unavailable,
        },
        "paused": spec.paused,
        "labels": dict(spec.labels),
        "units": [
            {
                "name": u.name,
                "sha256": u.digest,
                "on_change": u.on_change.value,
                "enable": u.enable,
                "timeout": u.timeout,
                "settle": u.settle,
                **({"register": u.register.name} if u.register else {}),
                **_text(u.content),
            }
            for u in spec.units
        ],
        "files": [
            {"path": f.path, "mode": f"{f.mode:04o}", "sha256": f.digest, **_text(f.content)}
            for f in spec.files
        ],
    }


def spec_to_text(spec: NodeSpec) -> str:
    """A short human summary: units in order and files with their modes and hashes."""
    lines = [
        f"node {spec.node} ({spec.role.value}) of cluster {spec.cluster.name} "
        f"at {spec.revision[:12]}{'  [paused]' if spec.paused else ''}",
        "units (start order):",
    ]
    for i, u in enumerate(spec.units, 1):
        extra = [f"on_change={u.on_change.value}"]
        if u.enable is not None:
            extra.append(f"enable={str(u.enable).lower()}")
        if u.register:
            extra.append(f"register={u.register.name}:{u.register.port}")
        lines.append(f"  {i:2}. {u.name:<32} {u.digest[:12]}  {' '.join(extra)}")
    lines.append("files:")
    for f in spec.files:
        lines.append(f"      {f.path:<40} {f.mode:04o}  {f.digest[:12]}  {len(f.content)} bytes")
    env = next((f for f in spec.files if f.path == spec.env_path), None)
    if env is not None:
        lines.append(f"environment ({spec.env_path}):")
        lines += [f"      {line}" for line in env.content.decode().splitlines() if "=" in line]
    return "\n".join(lines)
