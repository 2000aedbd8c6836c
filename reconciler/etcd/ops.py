"""The etcd requests our client sends, built as plain protobuf values (no I/O).

``reconciler.etcd.client`` sends these and retries them; building them here keeps the
shape of each conditional write (its compare, its success and failure branches) readable
apart from the connection handling, and testable without a server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aetcd import rpc
from aetcd.utils import prefix_range_end

from reconciler.etcd.watch import KV


def b(s: str | bytes) -> bytes:
    """A key or value as etcd's bytes."""
    return s.encode() if isinstance(s, str) else s


def range_op(key: str) -> rpc.RequestOp:
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=b(key)))


def prefix_op(prefix: str) -> rpc.RequestOp:
    p = b(prefix)
    return rpc.RequestOp(request_range=rpc.RangeRequest(key=p, range_end=prefix_range_end(p)))


def snapshot_request(keys: Sequence[str], prefixes: Sequence[str]) -> rpc.TxnRequest:
    """A compare-less transaction reading ``keys`` and ``prefixes`` at one revision."""
    return rpc.TxnRequest(success=[*map(range_op, keys), *map(prefix_op, prefixes)])


def _puts(also: Mapping[str, bytes | str] | None) -> list[rpc.RequestOp]:
    return [rpc.RequestOp(request_put=rpc.PutRequest(key=b(k), value=b(v)))
            for k, v in (also or {}).items()]  # fmt: skip


def absent(key: str) -> rpc.Compare:
    """The compare that holds while ``key`` does not exist."""
    return rpc.Compare(
        key=b(key), target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=0
    )


def value_is(key: str, value: bytes | str) -> rpc.Compare:
    """The compare that holds while ``key`` exists and holds exactly ``value``."""
    return rpc.Compare(
        key=b(key), target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL, value=b(value)
    )


def at_revision(key: str, mod_revision: int) -> rpc.Compare:
    """The compare that holds while ``key`` was last written at ``mod_revision``."""
    return rpc.Compare(
        key=b(key), target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=mod_revision
    )


def conditional_put(
    key: str, value: bytes | str, cmp: rpc.Compare, lease_id: int,
    also: Mapping[str, bytes | str] | None,
) -> rpc.TxnRequest:  # fmt: skip
    """Put ``key`` (and ``also``) if ``cmp`` holds; else read ``key``, so that a retried
    request can tell whether an earlier attempt's write was ours."""
    k = b(key)
    return rpc.TxnRequest(
        compare=[cmp],
        success=[
            rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=b(value), lease=lease_id)),
            *_puts(also),
        ],
        failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k))],
    )


def first_absent(
    candidates: Sequence[str], value: bytes | str, lease_id: int,
    also: Mapping[str, bytes | str] | None, guards: Sequence[rpc.Compare] = (),
) -> rpc.TxnRequest | None:  # fmt: skip
    """Nested transactions creating the first of ``candidates`` that does not exist (each
    failure branch holds the next try), each only while every ``guards`` compare holds;
    None for no candidates."""
    v, extra = b(value), _puts(also)
    req: rpc.TxnRequest | None = None
    for key in reversed(candidates):
        k = b(key)
        req = rpc.TxnRequest(
            compare=[*guards, absent(key)],
            success=[rpc.RequestOp(request_put=rpc.PutRequest(key=k, value=v, lease=lease_id)),
                     *extra],
            failure=[rpc.RequestOp(request_txn=req)] if req is not None else [],
        )  # fmt: skip
    return req


def created_key(candidates: Sequence[str], resp: rpc.TxnResponse) -> str | None:
    """Which candidate a ``first_absent`` response created: walk the nested failures."""
    for key in candidates:
        if resp.succeeded:
            return key
        if not resp.responses:
            break
        resp = resp.responses[0].response_txn
    return None


def holds(kv: KV | rpc.KeyValue | None, value: bytes | str, lease_id: int) -> bool:
    """Whether a key holds exactly ``value`` under ``lease_id``: how a retried write whose
    first answer was lost recognises that write as its own."""
    return kv is not None and kv.value == b(value) and kv.lease == lease_id


def put_and_release(key: str, value: bytes | str, release: str, holding: bytes) -> rpc.TxnRequest:
    """Put ``key``; delete ``release`` too if it still holds ``holding``."""
    put = rpc.RequestOp(request_put=rpc.PutRequest(key=b(key), value=b(value)))
    rk = b(release)
    return rpc.TxnRequest(
        # etcd fails a VALUE compare on a missing key: a vanished holding is not deleted
        compare=[
            rpc.Compare(key=rk, target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL, value=holding)
        ],
        success=[put, rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=rk))],
        failure=[put],
    )
