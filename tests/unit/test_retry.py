"""The retry classifier (one table for every client) and the backoff policy, as pure functions."""

from __future__ import annotations

import errno

import pytest
from fakeclock import FakeClock

from controller.retry import (
    AUTH_GRACE_SECONDS,
    FAIL,
    MAX_RETRY_AFTER_SECONDS,
    RELIST,
    RETRY,
    TRANSPORT,
    Backoff,
    BackoffPolicy,
    Verdict,
    http_verdict,
    storage_verdict,
    verdict_of,
)


@pytest.mark.parametrize(
    "status, extra, action, reason, retry_after, bounded",
    [
        pytest.param(408, {}, RETRY, "timeout", None, False, id="408-server-gave-up-waiting"),
        pytest.param(429, {"retry_after": 7}, RETRY, "throttled", 7, False, id="429-honours-retry-after"),
        pytest.param(429, {}, RETRY, "throttled", None, False, id="429-without-retry-after"),
        pytest.param(429, {"retry_after": 86400}, RETRY, "throttled", MAX_RETRY_AFTER_SECONDS, False,
                     id="429-retry-after-capped"),
        pytest.param(500, {}, RETRY, "server-error", None, False, id="500"),
        pytest.param(502, {}, RETRY, "server-error", None, False, id="502-proxy-no-replica"),
        pytest.param(503, {"retry_after": 2}, RETRY, "server-error", 2, False, id="503-gateway-draining"),
        pytest.param(504, {}, RETRY, "server-error", None, False, id="504"),
        pytest.param(401, {}, RETRY, "unauthorized", None, True, id="401-token-rotating-bounded"),
        pytest.param(403, {}, RETRY, "forbidden", None, True, id="403-rbac-cache-or-rotation-bounded"),
        pytest.param(409, {"reason": "Conflict"}, RETRY, "conflict", None, False, id="409-kube-conflict-reread"),
        pytest.param(409, {"reason": "AlreadyExists"}, FAIL, "rejected", None, False, id="409-already-exists"),
        pytest.param(409, {"code": "name_conflict"}, FAIL, "rejected", None, False, id="409-gateway-name-conflict"),
        pytest.param(410, {}, RELIST, "expired", None, False, id="410-relist"),
        pytest.param(500, {"reason": "Expired"}, RELIST, "expired", None, False, id="expired-reason-relist"),
        pytest.param(400, {"code": "upload_interrupted"}, RETRY, "interrupted", None, False,
                     id="400-upload-interrupted"),
        pytest.param(400, {"message": 'container "task" in pod "p" is waiting to start: ContainerCreating'},
                     RETRY, "not-started", None, False, id="400-container-not-started"),
        pytest.param(400, {}, FAIL, "rejected", None, False, id="400-bad-request"),
        pytest.param(404, {}, FAIL, "not-found", None, False, id="404"),
        pytest.param(413, {}, FAIL, "rejected", None, False, id="413-too-large"),
        pytest.param(422, {"reason": "Invalid"}, FAIL, "rejected", None, False, id="422-invalid"),
        pytest.param(418, {"retry_after": 3}, FAIL, "rejected", None, False, id="other-4xx-ignores-retry-after"),
    ],
)
def test_http_verdicts(status, extra, action, reason, retry_after, bounded):
    verdict = http_verdict(status, **extra)
    assert (verdict.action, verdict.reason, verdict.retry_after) == (action, reason, retry_after)
    assert (verdict.give_up_after == AUTH_GRACE_SECONDS) if bounded else verdict.give_up_after is None


@pytest.mark.parametrize(
    "code, action",
    [
        pytest.param(errno.ENOSPC, RETRY, id="disk-full"),
        pytest.param(errno.EDQUOT, RETRY, id="quota"),
        pytest.param(errno.EFBIG, RETRY, id="file-size-limit"),
        pytest.param(errno.EROFS, RETRY, id="read-only-volume"),
        pytest.param(errno.EIO, RETRY, id="failing-volume"),
        pytest.param(errno.EACCES, FAIL, id="permission-denied"),
        pytest.param(errno.ENOTDIR, FAIL, id="not-a-directory"),
    ],
)
def test_storage_verdicts(code, action):
    assert storage_verdict(OSError(code, "x")).action is action


def test_a_success_is_not_classified():
    with pytest.raises(ValueError):
        http_verdict(200)


def test_transport_failures_are_retried_without_bound():
    assert (TRANSPORT.action, TRANSPORT.give_up_after) == (RETRY, None)


def test_exceptions_carry_their_verdict_and_others_are_not_retried():
    class Classified(Exception):
        verdict = Verdict(RETRY, "x")

    assert verdict_of(Classified()).action is RETRY
    assert verdict_of(RuntimeError("a bug")).action is FAIL


@pytest.mark.parametrize(
    "policy, rand, waits",
    [
        pytest.param(BackoffPolicy(1, 8, jitter=0), 0.9, [1, 2, 4, 8, 8], id="doubles-to-the-cap"),
        pytest.param(BackoffPolicy(1, 8, jitter=1), 0.25, [0.75, 1.5, 3, 6, 6], id="full-jitter"),
        pytest.param(BackoffPolicy(1.6, 60, jitter=0.5), 0.0, [1.6, 3.2, 6.4, 12.8, 25.6, 51.2, 60],
                     id="informer-top-of-range"),
        pytest.param(BackoffPolicy(2, 2, factor=1, jitter=0), 0.5, [2, 2, 2], id="fixed-period-leader"),
    ],
)
def test_policy_waits(policy, rand, waits):
    backoff = Backoff(policy, FakeClock(), rng=lambda: rand)
    assert [backoff.next() for _ in waits] == pytest.approx(waits)


def test_informer_policy_settles_between_30_and_60_seconds():
    policy = BackoffPolicy(1.6, 60, jitter=0.5)
    assert policy.delay(30, 0.999999) == pytest.approx(30, abs=1e-3)
    assert policy.delay(30, 0.0) == 60


def test_a_huge_failure_count_does_not_overflow():
    assert BackoffPolicy(0.5, 30).ceiling(5000) == 30


def test_reset_starts_from_the_bottom():
    backoff = Backoff(BackoffPolicy(1, 100, jitter=0), FakeClock())
    backoff.next(), backoff.next(), backoff.next()
    backoff.reset()
    assert backoff.next() == 1


async def test_reset_after_a_quiet_period():
    clock = FakeClock()
    backoff = Backoff(BackoffPolicy(1, 100, jitter=0, reset_after=120), clock)
    assert [backoff.next(), backoff.next()] == [1, 2]
    await clock.advance(120)
    assert backoff.next() == 4, "not yet: 120 s is not more than reset_after"
    await clock.advance(121)
    assert backoff.next() == 1


def test_retry_after_lengthens_a_wait_but_never_shortens_it():
    backoff = Backoff(BackoffPolicy(5, 5, jitter=0), FakeClock())
    assert backoff.next(Verdict(RETRY, "throttled", retry_after=9)) == 9
    assert backoff.next(Verdict(RETRY, "throttled", retry_after=1)) == 5


@pytest.mark.parametrize("verdict", [Verdict(FAIL, "rejected"), Verdict(RELIST, "expired")],
                         ids=["fail", "relist"])
def test_verdicts_that_are_not_retries_stop(verdict):
    assert Backoff(BackoffPolicy(1, 2), FakeClock()).next(verdict) is None


async def test_a_bounded_retry_gives_up_after_its_grace_period():
    clock = FakeClock()
    backoff = Backoff(BackoffPolicy(1, 30, jitter=0), clock)
    refused = http_verdict(401)
    assert backoff.next(refused) == 1
    await clock.advance(AUTH_GRACE_SECONDS - 1)
    assert backoff.next(refused) == 2
    await clock.advance(1)
    assert backoff.next(refused) is None
    backoff.reset()
    assert backoff.next(refused) == 1, "a success in between starts a new grace period"


async def test_the_grace_period_counts_from_the_first_refusal_not_from_an_outage_before_it():
    clock = FakeClock()
    backoff = Backoff(BackoffPolicy(1, 30, jitter=0), clock)
    backoff.next(TRANSPORT)  # the gateway is away for a long time ...
    await clock.advance(AUTH_GRACE_SECONDS)
    assert backoff.next(http_verdict(403)) is not None  # ... and comes back with a new token
    await clock.advance(AUTH_GRACE_SECONDS / 2)
    assert backoff.next(TRANSPORT) is not None  # an outage in between does not restart the grace
    await clock.advance(AUTH_GRACE_SECONDS / 2)
    assert backoff.next(http_verdict(403)) is None


@pytest.mark.parametrize("kwargs", [dict(initial=0, maximum=1), dict(initial=2, maximum=1),
                                    dict(initial=1, maximum=2, factor=0.5), dict(initial=1, maximum=2, jitter=2)],
                         ids=["zero-initial", "initial-above-max", "shrinking", "jitter-above-one"])
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        BackoffPolicy(**kwargs)
