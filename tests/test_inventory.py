"""The inventory file: round trip, tolerance of a missing file, loud failure on a corrupt one."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from reconciler.actuators.inventory import CorruptInventory, InventoryStore
from reconciler.errors import NodeBusy
from reconciler.models import OnChange, Revision, UnitName
from reconciler.plan.applied import EMPTY, AppliedFile, AppliedUnit, Inventory, Original, Pending
from reconciler.plan.unittypes import Ran

INV = Inventory(
    revision=Revision("abc123"),
    units=(
        AppliedUnit(
            UnitName("a.service"),
            b"[Service]\nExecStart=/bin/true\n",
            OnChange.RELOAD,
            False,
            12.5,
            1.5,
        ),
        AppliedUnit(
            UnitName("b.service"),
            b"[Service]\n",
            ran=Ran.SKIPPED,
            original=Original(None, vendor=True, digest="cd" * 32, active=True),
        ),
    ),
    files=(
        AppliedFile("/etc/x.env", b"X=1\n", 0o600, Original(b"old\n", 0o640)),
        AppliedFile("/etc/blob", bytes(range(256)), 0o644),
    ),
    pending=Pending(
        Revision("def456"),
        (UnitName("c.service"),),
        ("/etc/new",),
        ("start c.service: new unit",),
        12.0,
        adopted_units=(
            (
                UnitName("c.service"),
                Original(b"[Service]\nExecStart=/bin/theirs\n", active=True, enabled=True),
            ),
            (UnitName("d.service"), Original(None, vendor=True, digest="ab" * 32, masked=True)),
        ),
        adopted_files=(("/etc/new", Original(b"\xff\x00theirs", 0o640)),),
    ),
    failed_revision=Revision("bad999"),
    updated_at=5.0,
)


def test_round_trip_keeps_every_field_and_binary_content(tmp_path: Path) -> None:
    store = InventoryStore(tmp_path / "state")
    store.save(INV)
    assert store.load() == INV
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    doc = json.loads(store.path.read_text())
    assert doc["units"][0]["content"].startswith("[Service]")  # readable by people
    assert "content_b64" in doc["files"][1]


def test_missing_file_is_an_empty_inventory(tmp_path: Path) -> None:
    assert InventoryStore(tmp_path).load() == EMPTY


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "JSONDecodeError"),
        ('{"version": 99}', "unknown version 99"),
        ('{"version": 1, "units": []}', "KeyError"),
        (
            '{"version": 1, "revision": "r", "units": [{"name": "a.service", "content": "x", "digest": "00", '
            '"on_change": "restart", "enable": null, "timeout": 30}], "files": [], "pending": null}',
            "unit a.service: content does not match its digest",
        ),
        (
            '{"version": 1, "revision": "r", "units": [{"name": "a.service", "content": "x", "digest": "00", '
            '"on_change": "sometimes", "enable": null, "timeout": 30}], "files": [], "pending": null}',
            "'sometimes' is not a valid OnChange",
        ),
    ],
)
def test_corrupt_file_is_a_clear_error(tmp_path: Path, text: str, why: str) -> None:
    store = InventoryStore(tmp_path)
    store.path.write_text(text)
    with pytest.raises(CorruptInventory) as e:
        store.load()
    assert str(e.value).startswith(f"{store.path}: corrupt inventory")
    assert why in str(e.value)


def test_an_inventory_written_before_settle_existed_loads_with_the_default(tmp_path: Path) -> None:
    store = InventoryStore(tmp_path)
    store.save(INV)
    doc = json.loads(store.path.read_text())
    assert doc["units"][0]["settle"] == 1.5
    for u in doc["units"]:
        del u["settle"]
    store.path.write_text(json.dumps(doc))
    assert [(u.name, u.settle) for u in store.load().units] == [
        ("a.service", None),
        ("b.service", None),
    ]


def test_a_pending_marker_of_the_older_format_still_loads(tmp_path: Path) -> None:
    doc = {
        "version": 1, "revision": None, "failed_revision": None, "updated_at": 0, "units": [],
        "files": [],
        "pending": {
            "revision": "r2", "units": ["c.service"], "files": ["/etc/new"], "actions": [],
            "started_at": 1.0,
            "original_units": [{"name": "c.service", "content": "[Service]\n"}],
            "original_files": [{"path": "/etc/new", "mode": "0640", "content": "x"}],
            "originally_active": ["c.service"], "originally_enabled": [],
        },
    }  # fmt: skip
    store = InventoryStore(tmp_path)
    store.path.write_text(json.dumps(doc))
    pending = store.load().pending
    assert pending is not None
    assert pending.adopted_units == (("c.service", Original(b"[Service]\n", active=True)),)
    assert pending.adopted_files == (("/etc/new", Original(b"x", 0o640)),)


def test_the_inventory_is_parsed_again_only_when_its_bytes_changed(tmp_path: Path) -> None:
    store = InventoryStore(tmp_path)
    inv = replace(INV, updated_at=5.0)
    store.save(inv)
    first = store.load()
    assert first == inv and store.load() is first  # the same bytes: not parsed again
    # a hand edit in place, same size and times: the bytes decide, not the stat
    path = tmp_path / "inventory.json"
    st = path.stat()
    path.write_bytes(path.read_bytes().replace(b"5.0", b"6.0"))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.load().updated_at == 6.0
    # another writer's inventory, then a corrupt one: each is what a load returns
    InventoryStore(tmp_path).save(replace(inv, updated_at=7.0))
    assert store.load().updated_at == 7.0
    path.write_bytes(b"{")
    with pytest.raises(CorruptInventory):
        store.load()


def test_the_apply_lock_has_one_holder_at_a_time_and_names_it(tmp_path: Path) -> None:
    a, b = InventoryStore(tmp_path), InventoryStore(tmp_path)
    (tmp_path / "apply.lock").write_text("1234567890123\n")  # a longer pid, left behind
    with a.exclusive(), pytest.raises(NodeBusy, match=rf"\(pid {os.getpid()}, "), b.exclusive():
        pass
    with b.exclusive(), pytest.raises(NodeBusy), a.exclusive():  # released: b may hold it
        pass
    # removed between two applies, and created again by another process: a store that
    # kept the old one open locks the new one
    (tmp_path / "apply.lock").unlink()
    with InventoryStore(tmp_path).exclusive(), pytest.raises(NodeBusy), a.exclusive():
        pass
    (tmp_path / "apply.lock").unlink()
    with a.exclusive(), pytest.raises(NodeBusy), InventoryStore(tmp_path).exclusive():
        pass
