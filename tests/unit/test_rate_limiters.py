"""Rate limiters are pure policy: call ``when`` and step a fake clock, nothing waits."""

from __future__ import annotations

import pytest
from fakeclock import FakeClock

from controller.workqueue import (
    BucketRateLimiter,
    ItemExponentialFailureRateLimiter,
    MaxOfRateLimiter,
    default_controller_rate_limiter,
)


class Fixed:
    """A limiter that always asks for the same wait and counts its calls."""

    def __init__(self, delay: float, requeues: int = 0) -> None:
        self.delay = delay
        self.requeues = requeues
        self.forgotten: list[object] = []

    def when(self, item: object) -> float:
        return self.delay

    def forget(self, item: object) -> None:
        self.forgotten.append(item)

    def num_requeues(self, item: object) -> int:
        return self.requeues


# -- exponential -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "cap", "expected"),
    [
        pytest.param(
            0.005, 1000.0, [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64], id="doubles-from-5ms"
        ),
        pytest.param(1.0, 5.0, [1.0, 2.0, 4.0, 5.0, 5.0], id="capped"),
        pytest.param(0.5, 0.1, [0.1, 0.1], id="cap-below-base"),
    ],
)
def test_exponential_sequence(base: float, cap: float, expected: list[float]) -> None:
    limiter = ItemExponentialFailureRateLimiter(base_delay=base, max_delay=cap)
    assert [limiter.when("a") for _ in expected] == pytest.approx(expected)


def test_exponential_defaults_reach_1000s_and_stay() -> None:
    limiter = ItemExponentialFailureRateLimiter()
    delays = [limiter.when("a") for _ in range(2000)]  # far past where 2**n overflows a float
    # 0.005 * 2**17 = 655 s, 0.005 * 2**18 = 1311 s: the 19th retry is the first capped one.
    assert delays[17] == pytest.approx(655.36)
    assert delays[18:] == [1000.0] * (2000 - 18)
    assert limiter.num_requeues("a") == 2000


def test_exponential_is_per_item_and_forget_resets() -> None:
    limiter = ItemExponentialFailureRateLimiter()
    assert [limiter.when("a") for _ in range(3)] == pytest.approx([0.005, 0.01, 0.02])
    assert limiter.when("b") == pytest.approx(0.005)
    assert (limiter.num_requeues("a"), limiter.num_requeues("b")) == (3, 1)

    limiter.forget("a")
    limiter.forget("never-seen")
    assert limiter.num_requeues("a") == 0
    assert limiter.when("a") == pytest.approx(0.005)
    assert limiter.num_requeues("b") == 1


# -- token bucket ----------------------------------------------------------------------------


def test_bucket_burst_then_spacing() -> None:
    limiter = BucketRateLimiter(FakeClock(), qps=10, burst=100)
    delays = [limiter.when(i) for i in range(105)]
    assert delays[:100] == [0.0] * 100
    # Each call reserves the next token: 0.1 s after the previous reservation.
    assert delays[100:] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])


@pytest.mark.parametrize(
    ("calls_before", "advance", "expected_next"),
    [
        pytest.param(103, 1.0, [0.0] * 7 + [0.1], id="refill-pays-debt-first"),
        pytest.param(100, 0.35, [0.0] * 3 + [0.05], id="partial-tokens"),
        pytest.param(100, 1000.0, [0.0] * 100 + [0.1], id="refill-capped-at-burst"),
        pytest.param(105, 0.25, [0.35], id="debt-shrinks-with-time"),
    ],
)
def test_bucket_refills_with_clock(
    calls_before: int, advance: float, expected_next: list[float]
) -> None:
    clock = FakeClock()
    limiter = BucketRateLimiter(clock, qps=10, burst=100)
    for i in range(calls_before):
        limiter.when(i)
    clock.advance(advance)
    assert [limiter.when("x") for _ in expected_next] == pytest.approx(expected_next)


def test_bucket_has_no_per_item_state() -> None:
    limiter = BucketRateLimiter(FakeClock(), qps=1, burst=1)
    assert limiter.when("a") == 0.0
    limiter.forget("a")
    assert limiter.when("a") == pytest.approx(1.0)
    assert limiter.num_requeues("a") == 0


@pytest.mark.parametrize(
    ("qps", "burst"),
    [pytest.param(0, 1, id="zero-qps"), pytest.param(1, 0, id="zero-burst")],
)
def test_bucket_rejects_nonsense(qps: float, burst: int) -> None:
    with pytest.raises(ValueError):
        BucketRateLimiter(FakeClock(), qps=qps, burst=burst)


# -- max-of ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delays", "expected"),
    [
        pytest.param([1.0, 3.0], 3.0, id="second-larger"),
        pytest.param([3.0, 1.0], 3.0, id="first-larger"),
        pytest.param([0.0, 0.0, 0.5], 0.5, id="three"),
        pytest.param([2.0], 2.0, id="one"),
    ],
)
def test_max_of_picks_the_largest(delays: list[float], expected: float) -> None:
    assert MaxOfRateLimiter(*(Fixed(d) for d in delays)).when("a") == expected


def test_max_of_asks_every_limiter_and_forgets_in_all() -> None:
    exponential = ItemExponentialFailureRateLimiter()
    fixed = Fixed(0.0, requeues=7)
    limiter = MaxOfRateLimiter(exponential, fixed)
    limiter.when("a")
    limiter.when("a")
    assert exponential.num_requeues("a") == 2
    assert limiter.num_requeues("a") == 7  # the max of the parts
    limiter.forget("a")
    assert exponential.num_requeues("a") == 0
    assert fixed.forgotten == ["a"]


def test_max_of_needs_a_limiter() -> None:
    with pytest.raises(ValueError):
        MaxOfRateLimiter()


# -- the default -----------------------------------------------------------------------------


def test_default_controller_rate_limiter() -> None:
    limiter = default_controller_rate_limiter(FakeClock())
    # One item failing repeatedly: the exponential part dominates.
    assert [limiter.when("a") for _ in range(3)] == pytest.approx([0.005, 0.01, 0.02])
    assert limiter.num_requeues("a") == 3
    # A storm of distinct items: the first 100 tokens (3 used above) are 5 ms, then the bucket's
    # 10 qps takes over.
    storm = [limiter.when(f"item-{i}") for i in range(99)]
    assert storm[:97] == pytest.approx([0.005] * 97)
    assert storm[97:] == pytest.approx([0.1, 0.2])
    limiter.forget("a")
    assert limiter.num_requeues("a") == 0
