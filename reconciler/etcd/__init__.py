"""Our etcd client (shell layer): connections, key/value, leases and resilient watches."""

from reconciler.etcd.client import Etcd
from reconciler.etcd.conn import TLSConfig
from reconciler.etcd.lease import Lease
from reconciler.etcd.watch import KV, Resynced, WatchEvent

__all__ = ["KV", "Etcd", "Lease", "Resynced", "TLSConfig", "WatchEvent"]
