"""Conditional writes, and how a retried one learns whether it was in fact ours.

``client.Etcd`` is the API (``create_if_absent``, ``create_first_absent``,
``compare_and_put``, ``put_and_release``); this module is what those calls do. Each is ONE
transaction, built by ``ops``, that the client retries like any call. A retry makes the
outcome ambiguous: when the transport breaks after the request was sent, the first attempt
may have committed and the retry then finds its compare failing (the key exists now). So a
conditional write that took more than one attempt and reports failure looks at what the key
holds (its failure branch reads it; ``create_first_absent`` reads the candidates back):
exactly our value under our lease means the earlier attempt's write was ours, and
``create_if_absent`` never reports a lost race for a write that it won.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from aetcd import rpc

from reconciler.etcd import ops
from reconciler.etcd.lease import Lease
from reconciler.etcd.watch import KV


class Client(Protocol):
    """What conditional writes need of ``client.Etcd``: a protocol, so this module does not
    import it."""

    async def counted_txn(
        self, req: rpc.TxnRequest, lease: Lease | None, what: str
    ) -> tuple[rpc.TxnResponse, int]: ...
    async def snapshot(
        self, *, keys: Sequence[str] = (), prefixes: Sequence[str] = ()
    ) -> tuple[dict[bytes, KV], int]: ...


async def put_if(
    etcd: Client,
    key: str,
    value: bytes | str,
    cmp: rpc.Compare,
    lease: Lease | None,
    what: str,
    also: Mapping[str, bytes | str] | None = None,
) -> bool:
    """Put ``key`` (and ``also``) only while ``cmp`` holds; True if this call wrote it."""
    lid = lease.id if lease else 0
    req = ops.conditional_put(key, value, cmp, lid, also)
    resp, attempts = await etcd.counted_txn(req, lease, what)
    if resp.succeeded:
        return True
    if attempts > 1:
        # If the key holds exactly what we wrote, under our lease, that write was ours.
        kvs = resp.responses[0].response_range.kvs
        return bool(kvs) and ops.holds(kvs[0], value, lid)
    return False


async def create_if_absent(
    etcd: Client,
    key: str,
    value: bytes | str,
    lease: Lease | None,
    also: Mapping[str, bytes | str] | None,
) -> bool:
    """Create ``key`` only if it does not exist; True if this call created it."""
    return await put_if(etcd, key, value, ops.absent(key), lease, "create_if_absent", also)


async def create_first_absent(
    etcd: Client,
    candidates: Sequence[str],
    value: bytes | str,
    lease: Lease | None,
    also: Mapping[str, bytes | str] | None,
    guards: Sequence[rpc.Compare],
) -> str | None:
    """Create the first of ``candidates`` that does not exist, in one request; the key this
    call created, or None. After a retry, the candidates are read back in one snapshot."""
    lid = lease.id if lease else 0
    req = ops.first_absent(candidates, value, lid, also, guards)
    if req is None:
        return None
    resp, attempts = await etcd.counted_txn(req, lease, "create_first_absent")
    created = ops.created_key(candidates, resp)
    if created is None and attempts > 1:
        kvs, _ = await etcd.snapshot(keys=candidates)
        return next((k for k in candidates if ops.holds(kvs.get(ops.b(k)), value, lid)), None)
    return created


async def compare_and_put(
    etcd: Client,
    key: str,
    value: bytes | str,
    mod_revision: int,
    lease: Lease | None,
    also: Mapping[str, bytes | str] | None,
) -> bool:
    """Write ``key`` only if it is still at ``mod_revision`` (0: does not exist)."""
    cmp = ops.at_revision(key, mod_revision)
    return await put_if(etcd, key, value, cmp, lease, "compare_and_put", also)


async def put_and_release(
    etcd: Client, key: str, value: bytes | str, release: str, holding: bytes
) -> bool:
    """Put ``key``; delete ``release`` in the same transaction if it still holds exactly
    ``holding``. True if this attempt deleted it (not disambiguated after a retry)."""
    req = ops.put_and_release(key, value, release, holding)
    resp, _ = await etcd.counted_txn(req, None, "put_and_release")
    return bool(resp.succeeded)
