"""The engine over a corpus nobody here wrote: Debian's installed unit files, made harmless.

``tests/fixtures/corpus.py`` collects the unit files this machine's packages installed (at
least 40; 199 on the development machine) and keeps of each what the engine's rules read.
Over the whole corpus, on a real systemd user manager:

* applied as desired units: converged; a second apply plans nothing; a third, fresh
  process plans nothing; every plain oneshot ran exactly once (the inventory says which
  ran and which a condition skipped); a changed revision runs each changed oneshot once
  more; a failing revision's rollback leaves every unit's active and enabled state exactly
  as before;
* installed as vendor units and running before swarmkeeper: a role that adopts them all
  (half byte-identical, half changed) and fails is rolled back to exactly the states the
  node had, with no file of ours left behind.
"""

from __future__ import annotations

import collections
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from reconciler.actuators.systemd import Scope, Systemd
from reconciler.apply.engine import Engine
from reconciler.models import NodeSpec, UnitName, UnitSpec
from reconciler.plan import unitfile, unittypes
from reconciler.plan.result import Outcome
from reconciler.plan.unittypes import Kind, Ran
from tests.fixtures.corpus import CorpusUnit, corpus
from tests.fixtures.systemd_user import UserManager
from tests.specs import spec, unit

CORPUS = corpus()
MIN_SIZE = 40


def _kind(u: CorpusUnit) -> Kind:
    if u.name.endswith(".service"):
        return unittypes.kind_of(u.ours, *unitfile.service_type(u.content))
    return unittypes.kind_of(u.ours)


def _specs(units: list[CorpusUnit], suffix: str = "") -> list[UnitSpec]:
    return [UnitSpec(UnitName(u.ours), u.content + suffix.encode()) for u in units]


def _states(um: UserManager, names: list[str]) -> dict[str, tuple[str, str]]:
    """(ActiveState, UnitFileState) of each unit (templates have none: left out)."""
    names = [n for n in names if not unittypes.is_template(n)]
    out = um.systemctl("show", "-p", "Id,ActiveState,UnitFileState", *names)
    states: dict[str, tuple[str, str]] = {}
    for block in out.stdout.strip().split("\n\n"):
        props = dict(line.split("=", 1) for line in block.splitlines() if "=" in line)
        states[props["Id"]] = (props.get("ActiveState", ""), props.get("UnitFileState", ""))
    assert sorted(states) == sorted(names), out.stderr
    return states


def _runs(um: UserManager) -> collections.Counter[str]:
    log = um.runtime_dir / "oneshots.log"
    return collections.Counter(log.read_text().split() if log.exists() else [])


async def _fresh_plan(um: UserManager, state: Path, s: NodeSpec) -> tuple[str, ...]:
    async with await Systemd.connect(
        Scope.USER, address=um.private_address, unit_dir=um.unit_dir
    ) as sd:
        return tuple(
            a.VERB + " " + str(getattr(a, "unit", "")) for a in await Engine(sd, state).plan(s)
        )


@pytest.fixture
async def sd(systemd_user: UserManager) -> AsyncIterator[Systemd]:
    async with await Systemd.connect(
        Scope.USER, address=systemd_user.private_address, unit_dir=systemd_user.unit_dir
    ) as s:
        yield s


def test_the_corpus_is_large_and_varied() -> None:
    kinds = collections.Counter(_kind(u) for u in CORPUS)
    assert len(CORPUS) >= MIN_SIZE, kinds
    names = {u.name for u in CORPUS}
    for must in ("docker.service", "docker.socket", "containerd.service", "dbus.socket"):
        assert must in names
    for k in (Kind.SOCKET, Kind.TIMER, Kind.TARGET, Kind.TEMPLATE, Kind.ONESHOT, Kind.NOTIFY):
        assert kinds[k] > 0, kinds


async def test_the_corpus_as_desired_units(
    systemd_user: UserManager, sd: Systemd, tmp_path: Path
) -> None:
    um, state = systemd_user, tmp_path / "state"
    engine = Engine(sd, state)
    r1 = spec(_specs(CORPUS))
    result = await engine.apply(r1)
    assert result.outcome is Outcome.CONVERGED, (result.error, result.failure)
    assert await engine.plan(r1) == ()
    assert (await engine.apply(r1)).actions == ()
    assert await _fresh_plan(um, state, r1) == ()

    inv = engine.inventory()
    oneshots = [u.ours for u in CORPUS if _kind(u) is Kind.ONESHOT]
    runs = _runs(um)
    ran = {n: inv.unit(n).ran for n in oneshots}  # type: ignore[union-attr]
    assert {n: runs[n] for n in oneshots} == {n: int(r is Ran.UP) for n, r in ran.items()}
    assert sum(r is Ran.UP for r in ran.values()) > 0

    # every oneshot changes: each one that ran runs once more, nothing else moves
    changed = [
        UnitSpec(s.name, s.content + (b"# r2\n" if s.name in ran else b"")) for s in _specs(CORPUS)
    ]
    r2 = spec(changed, rev="r2")
    result = await engine.apply(r2)
    assert result.outcome is Outcome.CONVERGED, (result.error, result.failure)
    runs = _runs(um)
    assert {n: runs[n] for n in oneshots} == {n: 2 * int(r is Ran.UP) for n, r in ran.items()}
    assert await _fresh_plan(um, state, r2) == ()

    # a failing revision that touches everything is rolled back to exactly these states
    names = [u.ours for u in CORPUS]
    before = _states(um, names)
    broken = spec(
        [*_specs(CORPUS, "# r3\n"), unit("zz-bad.service", exec_start="/bin/false")], rev="r3"
    )
    result = await engine.apply(broken)
    assert result.outcome is Outcome.ROLLED_BACK, result.error
    assert _states(um, names) == before
    assert await _fresh_plan(um, state, r2) == ()


async def test_the_corpus_as_vendor_units_adopted_by_a_failing_revision(
    systemd_user: UserManager, sd: Systemd, tmp_path: Path
) -> None:
    um = systemd_user
    vendor = um.home / ".local/share/systemd/user"
    vendor.mkdir(parents=True)
    for u in CORPUS:
        (vendor / u.ours).write_bytes(u.content)
    um.systemctl("daemon-reload", check=True)
    names = [u.ours for u in CORPUS if _kind(u) is not Kind.TEMPLATE]
    installable = [u.ours for u in CORPUS if unitfile.has_install(u.content)
                   and _kind(u) is not Kind.TEMPLATE]  # fmt: skip
    um.systemctl("enable", *installable[::2], check=True)  # a host enables some...
    targets = [n for n in names if n.endswith(".target")]
    # ...and runs its targets and some more (conditions may skip a few)
    um.systemctl("start", *targets, *names[1::3])
    all_names = [u.ours for u in CORPUS]
    before = _states(um, all_names)
    assert sum(a == "active" for a, _ in before.values()) > 10
    runs_before = _runs(um)

    adopting = [
        UnitSpec(UnitName(u.ours), u.content + (b"# changed\n" if i % 2 else b""))
        for i, u in enumerate(CORPUS)
    ]
    engine = Engine(sd, tmp_path / "state")
    result = await engine.apply(spec([*adopting, unit("zz-bad.service", exec_start="/bin/false")]))
    assert result.outcome is Outcome.ROLLED_BACK, result.error
    assert _states(um, all_names) == before
    assert sorted(p.name for p in um.unit_dir.iterdir() if p.is_file()) == []
    stale = um.systemctl("show", "-p", "NeedDaemonReload", *names).stdout
    assert "NeedDaemonReload=yes" not in stale
    runs = _runs(um)
    # a oneshot runs once per change of its definition: adopting a changed copy, giving
    # the original back; one that is up (RemainAfterExit, active) is not run again for a
    # byte-identical copy. (A plain oneshot systemd forgot cannot be told from one that
    # never ran: adopting it runs it once. One bound to a service (BindsTo=) stops and
    # starts with it: once more each time that service restarts for its socket, in the
    # failed apply and in the rollback.)
    identical = {u.ours for i, u in enumerate(CORPUS) if not i % 2}
    bound = {u.ours for u in CORPUS if b"\nBindsTo=" in u.content}
    allowed = {n: (1 if n in identical else 2) + 2 * (n in bound) for n in runs}
    assert {
        n: runs[n] - runs_before[n] for n in runs if runs[n] - runs_before[n] > allowed[n]
    } == {}
    # (a unit bound to a service the revision changed stops and starts with it: not "up")
    up = [n for n in identical - bound if before.get(n, ("",))[0] == "active"]
    assert {n: runs[n] for n in up} == {n: runs_before[n] for n in up}
