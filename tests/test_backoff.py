"""The one Backoff: grows exponentially, stays in [base, cap], jitters, and resets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.backoff import Backoff


@given(
    base=st.floats(0.001, 10),
    factor=st.floats(1, 1000),
    seed=st.integers(0, 2**32),
    n=st.integers(1, 80),
)
def test_every_delay_is_within_base_and_its_ceiling(
    base: float, factor: float, seed: int, n: int
) -> None:
    b = Backoff(base=base, cap=base * factor, rng=random.Random(seed))
    for i in range(1, n + 1):
        d = b.next_delay()
        assert base <= d <= min(b.cap, base * 2.0**i)
    assert b.failures == n


def test_grows_towards_the_cap_and_resets() -> None:
    b = Backoff(base=1, cap=8, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(10)]
    assert all(1 <= d <= 8 for d in delays)
    assert max(delays[5:]) > 4
    assert b.reset() == 10
    assert b.failures == 0 and b.next_delay() <= 2


def test_full_jitter_spreads_agents_that_failed_together() -> None:
    delays = [Backoff(base=1, cap=64, rng=random.Random(s)) for s in range(50)]
    for b in delays:
        for _ in range(5):
            last = b.next_delay()
    spread = sorted(b.next_delay() for b in delays)
    assert spread[-1] - spread[0] > 20  # the 6th retries are spread over [1, 64)
    assert last >= 1


def test_first_failure_marks_the_start_of_one_outage() -> None:
    b = Backoff(base=0.1, cap=1)
    seen = []
    for _ in range(4):
        b.next_delay()
        seen.append(b.first_failure)
    assert seen == [True, False, False, False]
    assert b.reset() == 4 and b.reset() == 0  # a second reset reports no outage


@pytest.mark.parametrize(("base", "cap"), [(0, 1), (-1, 1), (2, 1)])
def test_rejects_a_base_outside_zero_and_cap(base: float, cap: float) -> None:
    with pytest.raises(ValueError, match="0 < base <= cap"):
        Backoff(base=base, cap=cap)
