"""reconciler.etcd.client against a real etcd 3.4: key/value API, failover, TLS, auth expiry."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import aetcd
import aetcd.exceptions
import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
import pytest

from reconciler.errors import EtcdUnavailable, TransientError
from reconciler.etcd.client import KV, Etcd, EtcdError, LeaseNotFound, TLSConfig
from tests.fixtures.etcd import EtcdServer, free_ports


async def test_kv_round_trip(etcd_server: EtcdServer) -> None:
    async with await Etcd.connect([etcd_server.endpoint]) as e:
        rev = await e.put("/t/a", "1")
        kv = await e.get("/t/a")
        assert kv == KV(b"/t/a", b"1", rev, rev, 0)
        assert await e.get("/t/missing") is None
        await e.put("/t/b", b"\x00bin")
        await e.put("/tx", "outside the prefix")
        kvs, header_rev = await e.get_prefix("/t/")
        assert [(k.key, k.value) for k in kvs] == [(b"/t/a", b"1"), (b"/t/b", b"\x00bin")]
        assert header_rev == rev + 2
        assert await e.delete("/t/a") is True
        assert await e.delete("/t/a") is False
        assert await e.delete_prefix("/t/") == 1
        assert (await e.get_prefix("/t/"))[0] == []
        assert (await e.get("/tx")) is not None
        assert e.request_count >= 10


async def test_create_if_absent_and_compare_and_put(etcd_server: EtcdServer) -> None:
    async with await Etcd.connect([etcd_server.endpoint]) as e:
        assert await e.create_if_absent("/t/slot", "n1") is True
        assert await e.create_if_absent("/t/slot", "n2") is False
        kv = await e.get("/t/slot")
        assert kv is not None and kv.value == b"n1"
        assert await e.compare_and_put("/t/slot", "n3", mod_revision=kv.mod_revision) is True
        # Stale revision: refused, value unchanged.
        assert await e.compare_and_put("/t/slot", "n4", mod_revision=kv.mod_revision) is False
        after = await e.get("/t/slot")
        assert after is not None and after.value == b"n3"
        # mod_revision 0 means "must not exist".
        assert await e.compare_and_put("/t/new", "x", mod_revision=0) is True
        assert await e.compare_and_put("/t/new", "y", mod_revision=0) is False


async def test_snapshot_and_status_carrying_transactions(etcd_server: EtcdServer) -> None:
    async with await Etcd.connect([etcd_server.endpoint]) as e:
        for k, v in (("/t/d", "x"), ("/t/r/a", "1"), ("/t/r/b", "2"), ("/t/n/1", "peer")):
            await e.put(k, v)
        kvs, rev = await e.snapshot(keys=("/t/d", "/t/missing"), prefixes=("/t/r/",))
        assert {k: kv.value for k, kv in kvs.items()} == {
            b"/t/d": b"x",
            b"/t/r/a": b"1",
            b"/t/r/b": b"2",
        }
        assert rev == (await e.get_prefix("/t/"))[1]

        # the slot and the status that goes with it: both or neither
        assert await e.create_if_absent("/t/slot", "me", also={"/t/status": "applying"})
        assert await e.create_if_absent("/t/slot", "rival", also={"/t/status": "X"}) is False
        assert [(await e.get(k)).value for k in ("/t/slot", "/t/status")] == [  # type: ignore[union-attr]
            b"me",
            b"applying",
        ]

        # release only our own holding; the status is written either way
        assert await e.put_and_release("/t/status", "done", release="/t/slot", holding=b"me")
        assert await e.get("/t/slot") is None
        assert (await e.get("/t/status")).value == b"done"  # type: ignore[union-attr]
        await e.put("/t/slot", "rival")
        assert not await e.put_and_release("/t/status", "again", release="/t/slot", holding=b"me")
        assert (await e.get("/t/slot")).value == b"rival"  # type: ignore[union-attr]
        assert (await e.get("/t/status")).value == b"again"  # type: ignore[union-attr]
        assert not await e.put_and_release("/t/status", "gone", release="/t/none", holding=b"me")
        assert (await e.get("/t/status")).value == b"gone"  # type: ignore[union-attr]


async def test_racing_creators_take_distinct_slots_in_one_request_each(
    etcd_server: EtcdServer,
) -> None:
    """Eight clients all starting at the same slot each take a different one, each in one
    request; the status written with the slot is there; a full set gives None."""
    clients = [await Etcd.connect([etcd_server.endpoint]) for _ in range(8)]
    slots = [f"/t/slots/{i}" for i in range(8)]
    try:
        before = [c.request_count for c in clients]
        took = await asyncio.gather(*(
            c.create_first_absent(slots, f"c{i}", also={f"/t/status/c{i}": "applying"})
            for i, c in enumerate(clients)
        ))  # fmt: skip
        assert sorted(t for t in took if t is not None) == slots
        assert [c.request_count - b for c, b in zip(clients, before, strict=True)] == [1] * 8
        for i, key in enumerate(took):
            assert key is not None and (await clients[0].get(key)).value == f"c{i}".encode()  # type: ignore[union-attr]
            assert (await clients[0].get(f"/t/status/c{i}")).value == b"applying"  # type: ignore[union-attr]
        assert await clients[0].create_first_absent(slots, "late", also={"/t/x": "y"}) is None
        assert await clients[0].get("/t/x") is None
        assert await clients[0].create_first_absent([], "none") is None
    finally:
        for c in clients:
            await c.close()


async def test_racing_creators_exactly_one_wins(etcd_server: EtcdServer) -> None:
    clients = [await Etcd.connect([etcd_server.endpoint]) for _ in range(5)]
    try:
        wins = await asyncio.gather(
            *(c.create_if_absent("/t/race", f"c{i}") for i, c in enumerate(clients))
        )
        assert sum(wins) == 1
        kv = await clients[0].get("/t/race")
        assert kv is not None and kv.value == f"c{wins.index(True)}".encode()
    finally:
        for c in clients:
            await c.close()


async def test_failover_skips_dead_endpoints(etcd_server: EtcdServer) -> None:
    dead = [f"127.0.0.1:{p}" for p in free_ports(2)]
    async with await Etcd.connect([*dead, etcd_server.endpoint]) as e:
        await e.put("/t/k", "v")
        assert e.endpoint == etcd_server.endpoint
        kv = await e.get("/t/k")
        assert kv is not None and kv.value == b"v"


async def test_unavailable_when_nothing_answers_within_bound() -> None:
    dead = [f"127.0.0.1:{p}" for p in free_ports(2)]
    t0 = time.monotonic()
    with pytest.raises(EtcdUnavailable, match="no endpoint"):
        await Etcd.connect(dead, timeout=0.5, retry_for=1.5)
    assert time.monotonic() - t0 < 5


async def test_call_survives_restart_and_fails_bounded_when_down(
    etcd_server: EtcdServer,
) -> None:
    async with await Etcd.connect([etcd_server.endpoint], timeout=1.0, retry_for=2.0) as e:
        await e.put("/t/k", "before")
        await asyncio.to_thread(etcd_server.stop)
        t0 = time.monotonic()
        with pytest.raises(EtcdUnavailable):
            await e.get("/t/k")
        assert time.monotonic() - t0 < 4
        await asyncio.to_thread(etcd_server.start)
        kv = await e.get("/t/k")  # same client object, reconnected by itself
        assert kv is not None and kv.value == b"before"


def _etcdctl(endpoint: str, *args: str) -> str:
    out = subprocess.run(
        ["etcdctl", "--endpoints", endpoint, *args],
        check=True,
        capture_output=True,
        text=True,
        env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"},
        timeout=20,
    )
    return out.stdout


async def test_reauthenticates_after_token_expiry() -> None:
    with EtcdServer(extra_args=["--auth-token", "simple", "--auth-token-ttl", "1"]) as srv:
        ep = srv.endpoint
        _etcdctl(ep, "user", "add", "root", "--new-user-password", "rootpw")
        _etcdctl(ep, "user", "add", "agent", "--new-user-password", "agentpw")
        _etcdctl(ep, "role", "add", "agent")
        _etcdctl(ep, "role", "grant-permission", "agent", "--prefix=true", "readwrite", "/t/")
        _etcdctl(ep, "user", "grant-role", "agent", "agent")
        _etcdctl(ep, "auth", "enable")
        host, port = ep.split(":")

        # The raw aetcd client shows the problem we fix: after the TTL every call fails.
        raw = aetcd.Client(host=host, port=int(port), username="agent", password="agentpw")
        try:
            await raw.put(b"/t/raw", b"1")
            await asyncio.sleep(2.5)  # the token TTL (1 s) must pass; it is the subject
            with pytest.raises(aetcd.exceptions.UnauthenticatedError):
                await raw.put(b"/t/raw", b"2")
        finally:
            await raw.close()

        async with await Etcd.connect([ep], user="agent", password="agentpw") as e:
            await e.put("/t/k", "1")
            before = e.reconnects
            await asyncio.sleep(2.5)
            await e.put("/t/k", "2")
            assert e.reconnects == before + 1  # it did have to re-authenticate
            kv = await e.get("/t/k")
            assert kv is not None and kv.value == b"2"
        t0 = time.monotonic()
        with pytest.raises(EtcdError, match="authentication failed"):  # not retried
            await Etcd.connect([ep], user="agent", password="wrong", timeout=1, retry_for=1)
        assert time.monotonic() - t0 < 1


def _make_certs(d: Path) -> None:
    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d, timeout=30)

    ssl(
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    for name in ("server", "client", "other"):
        ssl(
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            f"/CN={name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        ca = "ca" if name != "other" else "other"
        if name == "other":  # a second, unrelated CA to prove verification happens
            ssl(
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=other-ca",
                "-keyout",
                "other-ca.key",
                "-out",
                "other-ca.crt",
            )
            ca = "other-ca"
        ssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            f"{ca}.crt",
            "-CAkey",
            f"{ca}.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
            "-out",
            f"{name}.crt",
        )


async def test_tls_with_client_certificates(tmp_path: Path) -> None:
    await asyncio.to_thread(_make_certs, tmp_path)
    port, peer = free_ports(2)
    url = f"https://127.0.0.1:{port}"
    srv = EtcdServer(
        client_port=port,
        peer_port=peer,
        extra_args=[
            "--listen-client-urls",
            url,
            "--advertise-client-urls",
            url,
            "--cert-file",
            str(tmp_path / "server.crt"),
            "--key-file",
            str(tmp_path / "server.key"),
            "--client-cert-auth",
            "--trusted-ca-file",
            str(tmp_path / "ca.crt"),
        ],
    )
    srv.spawn()
    try:
        # /health over plain http does not exist here: wait by connecting with TLS.
        tls = TLSConfig(
            ca=tmp_path / "ca.crt", cert=tmp_path / "client.crt", key=tmp_path / "client.key"
        )
        async with await Etcd.connect([f"https://127.0.0.1:{port}"], tls=tls, retry_for=20) as e:
            await e.put("/t/tls", "secret")
            kv = await e.get("/t/tls")
            assert kv is not None and kv.value == b"secret"
        # A server certificate from an unknown CA is refused.
        bad = TLSConfig(
            ca=tmp_path / "other-ca.crt", cert=tmp_path / "client.crt", key=tmp_path / "client.key"
        )
        with pytest.raises(EtcdUnavailable):
            await Etcd.connect([f"127.0.0.1:{port}"], tls=bad, timeout=1, retry_for=1)
        # So is a client without a certificate (--client-cert-auth).
        with pytest.raises(EtcdUnavailable):
            await Etcd.connect(
                [f"127.0.0.1:{port}"], tls=TLSConfig(ca=tmp_path / "ca.crt"), timeout=1, retry_for=1
            )
    finally:
        srv.close()


async def test_write_with_an_expired_lease_is_transient_and_marks_it_lost(
    etcd_server: EtcdServer,
) -> None:
    async with (
        await Etcd.connect([etcd_server.endpoint]) as e,
        await Etcd.connect([etcd_server.endpoint]) as other,
    ):
        lease = await e.lease(5)
        await other.revoke_lease(lease)  # gone on the server; e's keeper does not know yet
        with pytest.raises(LeaseNotFound):
            await e.put("/t/leased", "x", lease=lease)
        assert lease.lost and not lease.alive
        with pytest.raises(TransientError):  # what agents catch and retry
            await e.create_if_absent("/t/slot", "x", lease=lease)
        assert await e.get("/t/slot") is None


class _LosesFirstTxnAnswer:
    """Real etcd KV stub whose first Txn commits on the server but whose answer is 'lost'
    (the transport fails after sending), as in a leader kill mid-request."""

    def __init__(self, kv: object) -> None:
        self._kv = kv
        self.lost = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._kv, name)

    async def Txn(self, req: object, **kw: object) -> object:
        resp = await self._kv.Txn(req, **kw)  # type: ignore[attr-defined]
        if not self.lost:
            self.lost += 1
            raise grpc.aio.AioRpcError(
                grpc.StatusCode.UNAVAILABLE,
                grpc.aio.Metadata(),
                grpc.aio.Metadata(),
                "injected: answer lost",
            )
        return resp


async def test_txn_retry_after_lost_answer_reports_our_own_write(
    etcd_server: EtcdServer,
) -> None:
    async with (
        await Etcd.connect([etcd_server.endpoint]) as e,
        await Etcd.connect([etcd_server.endpoint]) as rival,
    ):
        lease = await e.lease(10)
        conn = await e.conn()
        conn.kv = _LosesFirstTxnAnswer(conn.kv)  # type: ignore[assignment]
        # Our create committed but we never heard: the retry sees the key exists, and it
        # holds our value under our lease -> it was ours.
        assert await e.create_if_absent("/t/slot", "me", lease=lease) is True
        assert conn.kv.lost == 1  # type: ignore[attr-defined]
        kv = await rival.get("/t/slot")
        assert kv is not None and (kv.value, kv.lease) == (b"me", lease.id)
        # A rival's key is never mistaken for ours, answer lost or not.
        assert await rival.create_if_absent("/t/other", "rival") is True
        conn2 = await e.conn()
        conn2.kv = _LosesFirstTxnAnswer(conn2.kv)  # type: ignore[assignment]
        assert await e.create_if_absent("/t/other", "me", lease=lease) is False


async def test_every_endpoint_is_tried_even_after_hung_ones(etcd_server: EtcdServer) -> None:
    """Two hung (SIGSTOPped) members fail first; the live third still gets its turn although
    the retry window (here next to nothing) is already spent."""
    with EtcdServer() as a, EtcdServer() as b:
        a.pause()
        b.pause()
        try:
            t0 = time.monotonic()
            async with await Etcd.connect(
                [a.endpoint, b.endpoint, etcd_server.endpoint], timeout=1, retry_for=0.01
            ) as e:
                await e.put("/t/k", "v")
                assert e.endpoint == etcd_server.endpoint
            assert time.monotonic() - t0 < 6
        finally:
            a.resume()
            b.resume()
