"""Cron schedules exactly as a Kubernetes CronJob reads them, and their run times.

Kubernetes parses ``spec.schedule`` with robfig/cron's standard parser. This module accepts the same
language, so a Task that validates here cannot be rejected by the API server or by the CronJob
controller, and it computes run times the way that controller will:

- five fields, ``minute hour day-of-month month day-of-week``, separated by whitespace; no seconds
  field, no year field;
- each field is a comma-separated list of ``*``, ``N``, ``N-M``, each optionally ``/step``
  (``N/step`` means ``N-max/step``); month and day-of-week also take names (``jan``, ``MON``,
  case-insensitive); ``?`` means ``*`` in day-of-month and day-of-week;
- day of week is 0-6 with 0 = Sunday (7 is rejected, as Kubernetes does);
- when day-of-month and day-of-week are both restricted a day matching *either* runs; when one of
  them is ``*`` (or ``*/1``) only the other decides (robfig's, and Vixie cron's, rule);
- the macros ``@yearly`` ``@annually`` ``@monthly`` ``@weekly`` ``@daily`` ``@midnight`` ``@hourly``.

Deliberately rejected (Kubernetes would accept them, but they are mistakes or unsupported by this
operator): ``@every <duration>``; ``?`` outside the two day fields; ``*-N``; and day-of-month lists
that can never occur (``0 0 31 2 *``), which Kubernetes accepts and then never runs. Also rejected,
as Kubernetes does for new CronJobs: ``TZ=``/``CRON_TZ=`` inside the schedule (use ``spec.timeZone``).
``L``, ``W``, ``#`` and ``H`` are not part of the language.

Time zones: a schedule runs on the wall clock of ``spec.timeZone`` (an IANA name), or of the
kube-controller-manager when unset, which this module takes to be UTC. Across DST changes a wall
time that does not exist (02:30 on a spring-forward day) does not run that day, and a wall time
that happens twice (01:30 on a fall-back day) runs twice — what the CronJob controller does.

Pure: no I/O, no clock. ``describe`` uses cron_descriptor, which reads its bundled translation
catalogue (package data) when first called; results are cached.
"""

from __future__ import annotations

import heapq
import re
from calendar import month_name
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from itertools import islice
from typing import Iterator
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cron_descriptor import ExpressionDescriptor, Options

from .errors import InvalidTask

SCHEDULE_FIELD = "spec.schedule"
TIME_ZONE_FIELD = "spec.timeZone"

MACROS: dict[str, str] = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MACRO_DESCRIPTIONS: dict[str, str] = {
    "@yearly": "Every year, at 00:00 on January 1",
    "@annually": "Every year, at 00:00 on January 1",
    "@monthly": "Every month, at 00:00 on day 1",
    "@weekly": "Every week, at 00:00 on Sunday",
    "@daily": "Every day, at 00:00",
    "@midnight": "Every day, at 00:00",
    "@hourly": "Every hour",
}

_MONTH_NAMES = {n: i for i, n in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), start=1)}
_DOW_NAMES = {n: i for i, n in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}
# Longest each month can be; February counts 29 so '0 0 29 2 *' (leap days) is valid.
_MONTH_MAX_DAY = {1: 31, 2: 29, 3: 31, 4: 30, 5: 31, 6: 30, 7: 31, 8: 31, 9: 30, 10: 31, 11: 30, 12: 31}
_DIGITS = re.compile(r"^[0-9]+$")
# Kubernetes' own check on each '/'-separated part of a time zone name.
_TZ_PART = re.compile(r"^[A-Za-z.\-_0-9+]{1,14}$")


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None
    question_mark: bool = False  # '?' allowed (as '*')


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day of month", 1, 31, question_mark=True),
    _Field("month", 1, 12, _MONTH_NAMES),
    _Field("day of week", 0, 6, _DOW_NAMES, question_mark=True),
)


@dataclass(frozen=True)
class Cron:
    """A parsed schedule: the set of values each field allows.

    ``dom_star``/``dow_star`` record that the field was ``*`` (or ``*/1``, ``?``), which decides
    how the two day fields combine (see ``day_matches``).
    """

    expression: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]
    dom_star: bool
    dow_star: bool

    def day_matches(self, day: date) -> bool:
        dom = day.day in self.days_of_month
        dow = (day.isoweekday() % 7) in self.days_of_week  # isoweekday: Sunday is 7
        if self.dom_star or self.dow_star:
            return dom and dow
        return dom or dow


def _invalid(expr: str, detail: str) -> InvalidTask:
    return InvalidTask(f"invalid cron expression '{expr}': {detail}", SCHEDULE_FIELD)


def _parse_value(text: str, field: _Field, pos: int, expr: str) -> int:
    if field.names is not None and text.lower() in field.names:
        return field.names[text.lower()]
    if _DIGITS.match(text):
        return int(text)
    if text == "":
        raise _invalid(expr, f"missing number in {field.name} field (field {pos})")
    hint = ""
    if field.names is not None and text.isalpha():
        names = list(field.names)
        hint = f"; use {field.low}-{field.high} or {names[0]}-{names[-1]}"
    elif re.search(r"[LWH#]", text.upper()):
        hint = "; Kubernetes cron does not support L, W, # or H"
    raise _invalid(expr, f"'{text}' is not a valid {field.name} (field {pos}){hint}")


def _check_bounds(value: int, field: _Field, pos: int, expr: str) -> None:
    if value < field.low or value > field.high:
        hint = "; use 0 or SUN for Sunday" if field.name == "day of week" and value == 7 else ""
        raise _invalid(
            expr, f"{field.name} {value} out of range {field.low}-{field.high} (field {pos}){hint}")


def _parse_field(text: str, field: _Field, pos: int, expr: str) -> tuple[frozenset[int], bool]:
    values: set[int] = set()
    star = False
    for part in text.split(","):
        if part == "":
            raise _invalid(expr, f"empty list item in {field.name} field '{text}' (field {pos})")
        range_text, slash, step_text = part.partition("/")
        if "/" in step_text:
            raise _invalid(expr, f"too many '/' in '{part}' (field {pos})")
        part_star = False
        explicit_end = False
        if range_text in ("*", "?"):
            if range_text == "?" and not field.question_mark:
                raise _invalid(
                    expr, f"'?' is only allowed in the day-of-month and day-of-week fields (field {pos})")
            start, end, part_star = field.low, field.high, True
        else:
            low_text, dash, high_text = range_text.partition("-")
            if low_text in ("*", "?"):
                raise _invalid(expr, f"'{part}' is not a valid {field.name} range (field {pos})")
            if "-" in high_text:
                raise _invalid(expr, f"too many '-' in '{part}' (field {pos})")
            start = _parse_value(low_text, field, pos, expr)
            end = _parse_value(high_text, field, pos, expr) if dash else start
            explicit_end = bool(dash)
        step = 1
        if slash:
            if not _DIGITS.match(step_text):
                raise _invalid(expr, f"step '{step_text}' in '{part}' is not a number (field {pos})")
            step = int(step_text)
            if step == 0:
                raise _invalid(expr, f"step 0 in '{part}' must be a positive number (field {pos})")
            if not part_star and not explicit_end:
                end = field.high  # 'N/step' means 'N-max/step'
            if step > 1:
                part_star = False
        _check_bounds(start, field, pos, expr)
        _check_bounds(end, field, pos, expr)
        if start > end:
            raise _invalid(
                expr, f"{field.name} range {start}-{end} in '{part}' runs backwards (field {pos})")
        values.update(range(start, end + 1, step))
        star = star or part_star
    return frozenset(values), star


def parse_schedule(expr: str) -> Cron:
    """Parse a schedule (surrounding whitespace ignored) or raise ``InvalidTask`` on ``spec.schedule``."""
    if not isinstance(expr, str):
        raise InvalidTask(f"must be a string, got {type(expr).__name__}", SCHEDULE_FIELD)
    return _parse_schedule(expr)


@lru_cache(maxsize=1024)
def _parse_schedule(expr: str) -> Cron:
    text = expr.strip()
    if not text:
        raise _invalid(expr, "the schedule is empty")
    if "TZ" in text:
        raise _invalid(
            expr, f"a time zone cannot be set inside the schedule (TZ= or CRON_TZ=); "
                  f"set {TIME_ZONE_FIELD} instead")
    if text.startswith("@"):
        if text.startswith("@every"):
            raise _invalid(
                expr, "@every is not supported; write an interval as a cron expression, "
                      "e.g. '*/5 * * * *' for every five minutes")
        if text not in MACROS:
            raise _invalid(
                expr, f"unknown macro '{text}'; use one of {', '.join(MACROS)} "
                      "or a 5-field cron expression")
        fields = MACROS[text].split()
    else:
        fields = text.split()
        if len(fields) != 5:
            extra = ("; Kubernetes cron has no seconds or year field" if len(fields) > 5 else "")
            raise _invalid(
                expr, f"expected 5 fields (minute hour day-of-month month day-of-week), "
                      f"found {len(fields)}{extra}")
    parsed = [_parse_field(t, f, i, expr) for i, (t, f) in enumerate(zip(fields, _FIELDS), start=1)]
    (minutes, _), (hours, _), (doms, dom_star), (months, _), (dows, dow_star) = parsed
    cron = Cron(
        expression=text,
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        days_of_month=doms,
        months=months,
        days_of_week=dows,
        dom_star=dom_star,
        dow_star=dow_star,
    )
    if dow_star and not dom_star and not any(
            d <= _MONTH_MAX_DAY[m] for m in months for d in doms):
        month_list = ", ".join(month_name[m] for m in sorted(months))
        day_list = ", ".join(str(d) for d in sorted(doms))
        verb = "has" if len(months) == 1 else "have"
        raise _invalid(expr, f"it never runs: {month_list} {verb} no day {day_list} (fields 3 and 4)")
    return cron


def validate_schedule(expr: str) -> None:
    """Raise ``InvalidTask`` (field ``spec.schedule``) unless ``expr`` is a schedule Kubernetes runs."""
    parse_schedule(expr)


def validate_time_zone(name: object) -> ZoneInfo:
    """The ``ZoneInfo`` for an IANA name, or ``InvalidTask`` on ``spec.timeZone``.

    Applies Kubernetes' own checks (no empty name, no ``Local``, no path tricks) before asking the
    system's tz database.
    """
    if not isinstance(name, str):
        raise InvalidTask(f"must be a string, got {type(name).__name__}", TIME_ZONE_FIELD)
    if not name:
        raise InvalidTask("must be an IANA time zone name such as 'Europe/Berlin', or unset",
                          TIME_ZONE_FIELD)
    if name.lower() == "local":
        raise InvalidTask("'Local' is not allowed; name an explicit IANA time zone such as "
                          "'Europe/Berlin'", TIME_ZONE_FIELD)
    for part in name.split("/"):
        if part in (".", "..") or part.startswith("-") or not _TZ_PART.match(part):
            raise InvalidTask(f"unknown time zone '{name}'", TIME_ZONE_FIELD)
    return _zone(name)


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidTask(f"unknown time zone '{name}'", TIME_ZONE_FIELD) from None


def _instants(wall: datetime, zone: tzinfo) -> tuple[datetime | None, datetime | None]:
    """The UTC instants at which a naive wall time occurs in ``zone``: (first, second).

    ``(None, None)`` for a wall time skipped by a DST gap; ``second`` is set only for a wall time
    repeated by a DST fall-back.
    """
    first = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
    if first.astimezone(zone).replace(tzinfo=None) != wall:
        return None, None
    second = wall.replace(tzinfo=zone, fold=1).astimezone(timezone.utc)
    return first, (second if second != first else None)


# A valid schedule always runs within 8 years (29 February across a non-leap century year);
# searching longer than this means a bug, not a rare schedule.
_MAX_IDLE_DAYS = 366 * 9
# No DST shift moves a wall clock back by more than this; walls earlier than "after" by more
# cannot map to an instant after it.
_MAX_SHIFT = timedelta(hours=3)


def iter_runs(expr: str, tz: str | None, after: datetime) -> Iterator[datetime]:
    """Run times strictly after ``after``, ascending, as timezone-aware UTC datetimes.

    ``tz`` is ``spec.timeZone`` (``None``: UTC). Lazily generated, unbounded.
    """
    if after.tzinfo is None:
        raise ValueError("iter_runs needs a timezone-aware 'after'")
    cron = parse_schedule(expr)
    zone: tzinfo = validate_time_zone(tz) if tz is not None else timezone.utc
    after = after.astimezone(timezone.utc)
    floor = after.astimezone(zone).replace(tzinfo=None) - _MAX_SHIFT
    day = floor.date()
    # Second occurrences of repeated wall times, waiting until every earlier first occurrence is
    # out. First occurrences ascend with the wall clock, so the heap only ever holds a DST hour.
    repeats: list[datetime] = []
    idle = 0
    while idle < _MAX_IDLE_DAYS:
        if day.month not in cron.months:
            nxt = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
            idle += (nxt - day).days
            day = nxt
            continue
        if cron.day_matches(day):
            for hour in cron.hours:
                for minute in cron.minutes:
                    wall = datetime(day.year, day.month, day.day, hour, minute)
                    if wall < floor:
                        continue
                    first, second = _instants(wall, zone)
                    if first is None:
                        continue
                    while repeats and repeats[0] < first:
                        idle = 0
                        yield heapq.heappop(repeats)
                    if first > after:
                        idle = 0
                        yield first
                    if second is not None and second > after:
                        heapq.heappush(repeats, second)
        idle += 1
        day += timedelta(days=1)
    while repeats:
        yield heapq.heappop(repeats)


def next_runs(expr: str, tz: str | None, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` run times strictly after ``after``, in UTC (see module docstring for DST)."""
    return list(islice(iter_runs(expr, tz, after), max(0, count)))


@lru_cache(maxsize=1)
def _describe_options() -> Options:
    return Options(use_24hour_time_format=True, verbose=False, locale_code="en_US")


@lru_cache(maxsize=1024)
def describe(expr: str) -> str:
    """A human-readable schedule: ``"@hourly"`` -> ``"Every hour"``, ``"30 2 * * *"`` -> ``"At 02:30"``.

    Falls back to the expression itself if it cannot be described.
    """
    text = expr.strip()
    if text in _MACRO_DESCRIPTIONS:
        return _MACRO_DESCRIPTIONS[text]
    try:
        return ExpressionDescriptor(text, _describe_options()).get_description()
    except Exception:  # noqa: BLE001 - a description is a nicety; never fail status on it
        return text
