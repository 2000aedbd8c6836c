"""``swarmkeeper cloudconfig``: user-data for manager and worker nodes, and its params file.

    swarmkeeper cloudconfig --params params.yml --out DIR [--format cloud-config|ignition|both]
    swarmkeeper cloudconfig init [--out params.yml] [--force]
    swarmkeeper cloudconfig discovery-url --size N

The generator works offline: ``discovery-url`` only prints the command that gets a token.
Bad params are reported all at once as ``path:line: message`` (exit 1), and so are values
still holding a placeholder (the template's discovery token, ``example.com`` hosts) unless
``--allow-placeholders``.
"""

from __future__ import annotations

import argparse
import os
import sys

from reconciler.commands._output import print_json, wants_json
from reconciler.errors import InvalidDesiredState, Problem, UsageError

NAME = "cloudconfig"
EC2_USER_DATA_MAX = 16384
HELP = "generate cloud-config / Ignition user-data for manager and worker nodes from params.yml"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--params", metavar="FILE", help="the params file (start from `cloudconfig init`)"
    )
    p.add_argument(
        "--out", dest="out_dir", metavar="DIR", help="directory for manager/worker user-data"
    )
    p.add_argument(
        "--format",
        choices=["cloud-config", "ignition", "both"],
        default=None,
        help="what to write (default: both for Flatcar, ignition for os: fcos)",
    )
    p.add_argument("--allow-placeholders", action="store_true",
                   help="generate even when params still hold placeholder values (tests)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON document")
    sub = p.add_subparsers(dest="action", metavar="ACTION")
    init = sub.add_parser("init", help="write a commented params.yml to start from")
    init.add_argument(
        "--out", dest="init_out", metavar="FILE", default="params.yml", help="(default: params.yml)"
    )
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="print one JSON document")  # fmt: skip
    disc = sub.add_parser(
        "discovery-url", help="print the command that gets an etcd discovery URL (offline)"
    )
    disc.add_argument(
        "--size", type=int, required=True, metavar="N", help="number of managers: 1, 3 or 5"
    )
    disc.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                      help="print one JSON document")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    if args.action == "init":
        return _init(args.init_out, args.force, wants_json(args))
    if args.action == "discovery-url":
        return _discovery(args.size, wants_json(args))
    return _generate(args.params, args.out_dir, args.format, args.allow_placeholders,
                     wants_json(args))  # fmt: skip


def _init(path: str, force: bool, as_json: bool) -> int:
    from cloudconfig.generate import atomic_write
    from cloudconfig.template import PARAMS_TEMPLATE

    if os.path.exists(path) and not force:
        raise UsageError(f"{path} exists; use --force to overwrite it")
    atomic_write(path, PARAMS_TEMPLATE.encode())
    if as_json:
        print_json("ParamsFile", {"path": path, "written": True})
        return 0
    print(f"wrote {path}: edit it, then `swarmkeeper cloudconfig --params {path} --out out/`")
    return 0


def _discovery(size: int, as_json: bool) -> int:
    if size not in (1, 3, 5):
        raise UsageError(f"--size must be 1, 3 or 5 (the number of managers), not {size}")
    command = f"curl -fsS 'https://discovery.etcd.io/new?size={size}'"
    if as_json:
        print_json("DiscoveryCommand", {"size": size, "command": command})
        return 0
    print(command)
    print(
        "# put the URL it prints under etcd.discovery in params.yml; use a new one for every "
        "new cluster",
        file=sys.stderr,
    )
    return 0


def _generate(
    params: str | None, out_dir: str | None, fmt: str | None, allow: bool, as_json: bool
) -> int:
    from cloudconfig.generate import generate, load_params_file, write_outputs
    from cloudconfig.params import placeholder_problems

    if not params or not out_dir:
        raise UsageError("give --params FILE and --out DIR (or the init / discovery-url action)")
    try:
        loaded = load_params_file(params)
    except OSError as e:
        raise UsageError(f"cannot read {params}: {e.strerror}") from None
    if not allow:
        with open(params, "rb") as f:
            found = placeholder_problems(params, f.read(), loaded.params)
        if found:
            raise InvalidDesiredState(found)
    os_ = loaded.params.os
    if fmt is None:
        fmt = "ignition" if os_ == "fcos" else "both"
    if os_ == "fcos" and fmt != "ignition":
        raise InvalidDesiredState(
            [
                Problem(
                    params, _os_line(params), "os fcos reads Ignition only: use --format ignition"
                )
            ]
        )
    formats = ["cloud-config", "ignition"] if fmt == "both" else [fmt]
    try:
        written = write_outputs(out_dir, generate(loaded, formats))
    except OSError as e:
        raise UsageError(f"cannot write to {out_dir}: {e.strerror}") from None
    for path in written:
        if not as_json:
            print(path)
        size = os.path.getsize(path)
        if size > EC2_USER_DATA_MAX:
            print(
                f"warning: {path} is {size} bytes: EC2 takes at most {EC2_USER_DATA_MAX} bytes "
                "of user-data (other providers allow more)",
                file=sys.stderr,
            )
    if as_json:
        print_json("UserData", {"params": params, "out": out_dir, "formats": formats,
                                "files": [{"path": p, "bytes": os.path.getsize(p)}
                                          for p in written]})  # fmt: skip
    return 0


def _os_line(params: str) -> int:
    from reconciler.desired.yamlpos import load_yaml

    with open(params, "rb") as f:
        _, pos, _ = load_yaml(params, f.read())
    return pos.line(("os",))
