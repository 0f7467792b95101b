"""Schedules: exactly the cron Kubernetes CronJob runs, with run times that honour time zones and DST."""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter

from controller.model.errors import InvalidTask
from controller.model.schedule import describe, iter_runs, next_runs, validate_schedule, validate_time_zone


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "expr",
    [
        pytest.param("* * * * *", id="every-minute"),
        pytest.param("0 * * * *", id="hourly"),
        pytest.param("*/15 9-17 * * 1-5", id="steps-ranges"),
        pytest.param("0,30 8,20 1,15 * *", id="lists"),
        pytest.param("5/20 * * * *", id="start-slash-step"),
        pytest.param("0 0 * JAN-MAR MON-FRI", id="uppercase-names"),
        pytest.param("0 0 * jan,jul sun", id="lowercase-names"),
        pytest.param("0 0 ? * *", id="question-mark-day"),
        pytest.param("0 0 29 2 *", id="leap-day"),
        pytest.param("0 0 30,31 2,4 *", id="april-30-makes-it-possible"),
        pytest.param("59 23 31 12 6", id="upper-bounds"),
        pytest.param("  0  12  *  *  *  ", id="extra-whitespace"),
        pytest.param("@yearly", id="macro-yearly"),
        pytest.param("@annually", id="macro-annually"),
        pytest.param("@monthly", id="macro-monthly"),
        pytest.param("@weekly", id="macro-weekly"),
        pytest.param("@daily", id="macro-daily"),
        pytest.param("@midnight", id="macro-midnight"),
        pytest.param("@hourly", id="macro-hourly"),
    ],
)
def test_schedules_kubernetes_accepts(expr):
    validate_schedule(expr)


@pytest.mark.parametrize(
    ("expr", "detail"),
    [
        pytest.param("61 * * * *", "minute 61 out of range 0-59 (field 1)", id="minute-61"),
        pytest.param("0 24 * * *", "hour 24 out of range 0-23 (field 2)", id="hour-24"),
        pytest.param("0 0 0 * *", "day of month 0 out of range 1-31 (field 3)", id="day-0"),
        pytest.param("0 0 * 13 *", "month 13 out of range 1-12 (field 4)", id="month-13"),
        pytest.param("0 0 * * 7", "day of week 7 out of range 0-6 (field 5); use 0 or SUN for Sunday",
                     id="sunday-as-7-like-kubernetes"),
        pytest.param("0 0-30/0 * * *", "step 0 in '0-30/0' must be a positive number (field 2)", id="zero-step"),
        pytest.param("30-10 * * * *", "minute range 30-10 in '30-10' runs backwards (field 1)", id="backwards"),
        pytest.param("0 0 * * FOO", "'FOO' is not a valid day of week (field 5); use 0-6 or sun-sat",
                     id="unknown-day-name"),
        pytest.param("0 0 * jan-foo *", "'foo' is not a valid month (field 4); use 1-12 or jan-dec",
                     id="unknown-month-name"),
        pytest.param("0 0 L * *", "'L' is not a valid day of month (field 3); Kubernetes cron does not support "
                     "L, W, # or H", id="last-day-L"),
        pytest.param("0 0 * * 5#3", "'5#3' is not a valid day of week (field 5); Kubernetes cron does not "
                     "support L, W, # or H", id="nth-weekday"),
        pytest.param("H * * * *", "'H' is not a valid minute (field 1); Kubernetes cron does not support "
                     "L, W, # or H", id="jenkins-hash"),
        pytest.param("? * * * *", "'?' is only allowed in the day-of-month and day-of-week fields (field 1)",
                     id="question-mark-in-minutes"),
        pytest.param("*-5 * * * *", "'*-5' is not a valid minute range (field 1)", id="star-range"),
        pytest.param("1,,2 * * * *", "empty list item in minute field '1,,2' (field 1)", id="empty-list-item"),
        pytest.param("0 0 1 1", "expected 5 fields (minute hour day-of-month month day-of-week), found 4",
                     id="four-fields"),
        pytest.param("0 0 0 1 1 *", "expected 5 fields (minute hour day-of-month month day-of-week), found 6; "
                     "Kubernetes cron has no seconds or year field", id="seconds-field"),
        pytest.param("@every 5m", "@every is not supported; write an interval as a cron expression, e.g. "
                     "'*/5 * * * *' for every five minutes", id="every-duration"),
        pytest.param("@Hourly", "unknown macro '@Hourly'; use one of @yearly, @annually, @monthly, @weekly, "
                     "@daily, @midnight, @hourly or a 5-field cron expression", id="macro-is-case-sensitive"),
        pytest.param("TZ=UTC 0 * * * *", "a time zone cannot be set inside the schedule (TZ= or CRON_TZ=); "
                     "set spec.timeZone instead", id="tz-prefix"),
        pytest.param("CRON_TZ=Europe/Berlin 0 * * * *", "a time zone cannot be set inside the schedule "
                     "(TZ= or CRON_TZ=); set spec.timeZone instead", id="cron-tz-prefix"),
        pytest.param("0 0 31 2 *", "it never runs: February has no day 31 (fields 3 and 4)", id="february-31"),
        pytest.param("0 0 30,31 2 *", "it never runs: February has no day 30, 31 (fields 3 and 4)",
                     id="february-30-31"),
        pytest.param("", "the schedule is empty", id="empty"),
    ],
)
def test_invalid_schedules_point_at_the_field(expr, detail):
    with pytest.raises(InvalidTask) as err:
        validate_schedule(expr)
    assert err.value.field == "spec.schedule"
    assert err.value.detail == f"invalid cron expression '{expr}': {detail}"
    assert err.value.message == f"spec.schedule: invalid cron expression '{expr}': {detail}"


@pytest.mark.parametrize(
    ("expr", "tz", "after", "expected"),
    [
        pytest.param("* * * * *", None, "2025-01-01T10:00:00", ["2025-01-01T10:01:00", "2025-01-01T10:02:00"],
                     id="strictly-after-a-run-time"),
        pytest.param("* * * * *", None, "2025-01-01T10:00:30", ["2025-01-01T10:01:00"], id="mid-minute"),
        pytest.param("@hourly", None, "2025-01-01T10:59:59", ["2025-01-01T11:00:00", "2025-01-01T12:00:00"],
                     id="hourly"),
        pytest.param("5/20 * * * *", None, "2025-01-01T10:00:00",
                     ["2025-01-01T10:05:00", "2025-01-01T10:25:00", "2025-01-01T10:45:00", "2025-01-01T11:05:00"],
                     id="start-slash-step-runs-to-the-end-of-the-range"),
        pytest.param("@weekly", None, "2025-01-01T00:00:00", ["2025-01-05T00:00:00", "2025-01-12T00:00:00"],
                     id="weekly-is-sunday-midnight"),
        pytest.param("0 0 1,15 * 1", None, "2025-01-01T00:00:00",
                     ["2025-01-06T00:00:00", "2025-01-13T00:00:00", "2025-01-15T00:00:00", "2025-01-20T00:00:00"],
                     id="both-day-fields-restricted-means-either"),
        pytest.param("0 0 * * 1", None, "2025-01-01T00:00:00", ["2025-01-06T00:00:00", "2025-01-13T00:00:00"],
                     id="day-of-month-star-means-weekday-only"),
        pytest.param("0 0 */1 * 1", None, "2025-01-01T00:00:00", ["2025-01-06T00:00:00", "2025-01-13T00:00:00"],
                     id="star-slash-one-is-still-star"),
        pytest.param("0 0 */2 * 1", None, "2025-01-01T00:00:00",
                     ["2025-01-03T00:00:00", "2025-01-05T00:00:00", "2025-01-06T00:00:00", "2025-01-07T00:00:00"],
                     id="star-slash-two-restricts-so-either"),
        pytest.param("0 0 29 2 *", None, "2025-01-01T00:00:00", ["2028-02-29T00:00:00", "2032-02-29T00:00:00"],
                     id="leap-days"),
        pytest.param("0 0 29 2 *", None, "2097-01-01T00:00:00", ["2104-02-29T00:00:00"],
                     id="no-leap-day-in-2100"),
        pytest.param("@yearly", "Asia/Kolkata", "2025-01-01T00:00:00", ["2025-12-31T18:30:00"],
                     id="yearly-in-a-half-hour-zone"),
        pytest.param("30 2 * * *", "America/New_York", "2025-03-08T00:00:00",
                     ["2025-03-08T07:30:00", "2025-03-10T06:30:00", "2025-03-11T06:30:00"],
                     id="dst-gap-skips-the-missing-0230"),
        pytest.param("30 1 * * *", "America/New_York", "2025-11-01T12:00:00",
                     ["2025-11-02T05:30:00", "2025-11-02T06:30:00", "2025-11-03T06:30:00"],
                     id="dst-fallback-runs-the-repeated-0130-twice"),
        pytest.param("*/30 * * * *", "America/New_York", "2025-11-02T04:00:00",
                     ["2025-11-02T04:30:00", "2025-11-02T05:00:00", "2025-11-02T05:30:00", "2025-11-02T06:00:00",
                      "2025-11-02T06:30:00", "2025-11-02T07:00:00"],
                     id="dst-fallback-keeps-real-time-order"),
        pytest.param("*/30 * * * *", "America/New_York", "2025-03-09T06:00:00",
                     ["2025-03-09T06:30:00", "2025-03-09T07:00:00", "2025-03-09T07:30:00"],
                     id="dst-gap-interval-continues-in-real-time"),
        pytest.param("0 3 * * *", "Europe/Berlin", "2025-03-29T00:00:00",
                     ["2025-03-29T02:00:00", "2025-03-30T01:00:00", "2025-03-31T01:00:00"],
                     id="berlin-spring-forward-0300-exists"),
        pytest.param("0 9 * * *", "Europe/Berlin", "2025-01-01T08:30:00",
                     ["2025-01-02T08:00:00"], id="berlin-winter-offset"),
    ],
)
def test_next_runs(expr, tz, after, expected):
    runs = next_runs(expr, tz, utc(after), len(expected))
    assert [r.replace(tzinfo=None).isoformat() for r in runs] == expected
    assert all(r.tzinfo == timezone.utc for r in runs)


def test_next_runs_accept_any_aware_time():
    berlin = datetime(2025, 1, 1, 11, 0, tzinfo=ZoneInfo("Europe/Berlin"))  # 10:00Z
    assert next_runs("@hourly", None, berlin, 1) == [utc("2025-01-01T11:00:00")]


def test_next_runs_reject_naive_times():
    with pytest.raises(ValueError):
        next_runs("@hourly", None, datetime(2025, 1, 1), 1)


@pytest.mark.parametrize(
    "expr",
    ["*/7 * * * *", "0 9-17 * * 1-5", "15 3 1,15 * *", "0 0 * * 0", "30 4 * jan,jul *", "0 12 * * mon-fri",
     "0 0 1 */3 *", "5/20 */2 * * *", "0 0 13 * 5"],
)
def test_agrees_with_croniter_in_utc(expr):
    start = utc("2024-12-30T13:17:00")
    reference = croniter(expr, start)
    expected = [reference.get_next(datetime) for _ in range(40)]
    assert next_runs(expr, None, start, 40) == expected


def test_iter_runs_is_lazy_and_unbounded():
    runs = iter_runs("* * * * *", "UTC", utc("2025-01-01T00:00:00"))
    assert [next(runs) for _ in range(3)] == [utc("2025-01-01T00:01:00"), utc("2025-01-01T00:02:00"),
                                              utc("2025-01-01T00:03:00")]


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        pytest.param("UTC", True, id="utc"),
        pytest.param("Etc/UTC", True, id="etc-utc"),
        pytest.param("Europe/Berlin", True, id="two-parts"),
        pytest.param("America/Argentina/Buenos_Aires", True, id="three-parts"),
        pytest.param("Mars/Olympus", False, id="unknown"),
        pytest.param("Local", False, id="local-like-kubernetes"),
        pytest.param("", False, id="empty"),
        pytest.param("../../etc/passwd", False, id="path-traversal"),
        pytest.param("America", False, id="a-directory"),
        pytest.param("Europe/Berlin ", False, id="trailing-space"),
        pytest.param("-Europe/Berlin", False, id="leading-dash"),
    ],
)
def test_time_zones(name, valid):
    if valid:
        assert validate_time_zone(name).key == name
    else:
        with pytest.raises(InvalidTask) as err:
            validate_time_zone(name)
        assert err.value.field == "spec.timeZone"


def test_unknown_time_zone_message():
    with pytest.raises(InvalidTask) as err:
        validate_time_zone("Mars/Olympus")
    assert str(err.value) == "spec.timeZone: unknown time zone 'Mars/Olympus'"


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        pytest.param("@hourly", "Every hour", id="hourly-macro"),
        pytest.param("@daily", "Every day, at 00:00", id="daily-macro"),
        pytest.param("@midnight", "Every day, at 00:00", id="midnight-macro"),
        pytest.param("@weekly", "Every week, at 00:00 on Sunday", id="weekly-macro"),
        pytest.param("@monthly", "Every month, at 00:00 on day 1", id="monthly-macro"),
        pytest.param("@yearly", "Every year, at 00:00 on January 1", id="yearly-macro"),
        pytest.param("* * * * *", "Every minute", id="every-minute"),
        pytest.param("0 * * * *", "Every hour", id="hourly-cron"),
        pytest.param("30 14 * * *", "At 14:30", id="24-hour-clock"),
        pytest.param("*/15 9-17 * * MON-FRI", "Every 15 minutes, between 09:00 and 17:59, Monday through Friday",
                     id="business-hours"),
        pytest.param("not a cron", "not a cron", id="undescribable-falls-back-to-the-expression"),
    ],
)
def test_describe(expr, text):
    assert describe(expr) == text
