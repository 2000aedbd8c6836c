"""A stand-in for Vault in the sandbox: answers the health endpoints like an unsealed Vault.

No Vault binary or image exists on this machine. The sandbox's Vault image runs this file with
the arguments the Vault unit passes (``server -config=FILE``); it reads the listener address
from that HCL file (``address = "HOST:PORT"``, default 0.0.0.0:8200) and serves
``/v1/sys/seal-status`` and ``/v1/sys/health`` so the agent's health check and service
registration see a healthy Vault. It stores nothing and serves nothing else (404).
Runs on the image's Debian python3 with the standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SEAL_STATUS = {"type": "shamir", "initialized": True, "sealed": False, "t": 1, "n": 1,
               "progress": 0, "version": "sandbox-standin", "storage_type": "etcd"}  # fmt: skip
HEALTH = {"initialized": True, "sealed": False, "standby": False, "version": "sandbox-standin"}


def listen_address(argv: list[str]) -> tuple[str, int]:
    config = next((a.split("=", 1)[1] for a in argv if a.startswith("-config=")), None)
    text = ""
    if config:
        try:
            with open(config, encoding="utf-8") as f:
                text = f.read()
        except OSError:
            text = ""
    m = re.search(r'listener\s+"tcp"\s*{[^}]*address\s*=\s*"([^"]+):(\d+)"', text)
    return (m.group(1), int(m.group(2))) if m else ("0.0.0.0", 8200)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        body = {"/v1/sys/seal-status": SEAL_STATUS, "/v1/sys/health": HEALTH}.get(path)
        data = json.dumps(body if body is not None else {"errors": []}).encode()
        self.send_response(200 if body is not None else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        return


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "server":
        print("vault stand-in: only `server -config=FILE` is supported", file=sys.stderr)
        return 2
    host, port = listen_address(argv[1:])
    print(f"vault stand-in: unsealed, listening on {host}:{port}", flush=True)
    ThreadingHTTPServer((host, port), Handler).serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
