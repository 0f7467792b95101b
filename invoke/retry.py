"""Which failed calls are tried again, and after how long. Pure: one classifier for every call the
action makes (client-go's ``reflector.go`` names why each error is retried; so does this table).

A call ends without a usable answer for one of these causes::

    cause        meaning                                          poll (GET)   invoke (POST)   gives up as
    CONNECT      no connection: refused, DNS, connect timeout;    retry        retry           Unreachable
                 nothing reached the agent
    OVERLOADED   the agent answered 429 or 503                    retry        retry           Error
    SERVER       the agent answered another 5xx                   retry        retry           Error
    LOST         the connection broke after the request was       retry        NO              Unreachable
                 sent, before an answer came
    TIMEOUT      no answer within the request timeout after the   retry        NO              TimedOut
                 request was sent

Why the POST is retried after an answer of 5xx/429 but never once it may have been accepted: the
agent contract says a 5xx or 429 answer means no activation was started, so trying again cannot
start a second one (and the ``Idempotency-Key`` guards an agent that breaks that rule). A lost
connection or a timeout after the request was sent says nothing: the agent may be running the
activation already. The key would make a retry safe only with an agent that honours it, which the
action cannot check, and an agent that ignores it would run the work twice; so the action gives up
and says so (Unreachable/TimedOut, "may have been accepted"). A later run of the same execution
(the Job's next pod) sends the same key, so an agent that honours it answers with the activation it
already has instead of starting another.

Delays: exponential backoff, ``base * 2**(attempt-1)`` capped at ``cap``, with "equal jitter"
(between half and all of it), so clients that failed together do not retry together. A
``Retry-After`` answer header (seconds or an HTTP date) is honoured: the wait is never shorter.
The caller caps every wait by its deadline.
"""

from __future__ import annotations

from datetime import datetime
from email.utils import parsedate_to_datetime
from enum import Enum

from .outcome import InvokeStatus


class Cause(str, Enum):
    CONNECT = "connect"
    OVERLOADED = "overloaded"
    SERVER = "server"
    LOST = "lost"
    TIMEOUT = "timeout"


_GIVE_UP_STATUS = {
    Cause.CONNECT: InvokeStatus.UNREACHABLE,
    Cause.OVERLOADED: InvokeStatus.ERROR,
    Cause.SERVER: InvokeStatus.ERROR,
    Cause.LOST: InvokeStatus.UNREACHABLE,
    Cause.TIMEOUT: InvokeStatus.TIMED_OUT,
}

#: Causes after which the request may have reached the agent and been accepted.
MAY_HAVE_BEEN_ACCEPTED = frozenset({Cause.LOST, Cause.TIMEOUT})


def cause_of_status(http_status: int) -> Cause | None:
    """The cause an HTTP answer stands for when it is worth trying again; None for any other answer
    (2xx is used, 404 and other 4xx are permanent)."""
    if http_status in (429, 503):
        return Cause.OVERLOADED
    if 500 <= http_status <= 599:
        return Cause.SERVER
    return None


def is_retryable(cause: Cause, idempotent: bool) -> bool:
    """May a call that failed for ``cause`` be made again? ``idempotent``: polls are, the invoke
    POST is not (see the module docstring)."""
    return idempotent or cause not in MAY_HAVE_BEEN_ACCEPTED


def give_up_status(cause: Cause) -> InvokeStatus:
    """The invoke status of a call abandoned after ``cause``."""
    return _GIVE_UP_STATUS[cause]


def backoff_delay(attempt: int, base: float, cap: float, jitter: float) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based); ``jitter`` in [0, 1)."""
    ceiling = min(cap, base * 2 ** min(attempt - 1, 62))
    return ceiling / 2 + ceiling / 2 * jitter


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait: delay-seconds (a decimal number is accepted
    too) or an HTTP date; None when absent or unreadable. ``now`` is aware UTC."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            return None
        return max(0.0, (when - now).total_seconds())
    return seconds if seconds >= 0 and seconds == seconds and seconds != float("inf") else None


def retry_delay(attempt: int, retry_after: float | None, base: float, cap: float, jitter: float) -> float:
    """The wait before the next attempt: the backoff, or longer when the agent asked for longer."""
    delay = backoff_delay(attempt, base, cap, jitter)
    return max(delay, retry_after) if retry_after is not None else delay
