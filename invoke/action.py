"""One agent invocation, followed to its end: the POST, the polls, retries, and the deadline.

``Invocation(...).run()`` returns the ``Outcome``; it never raises for anything the agent or the
network does. Its steps::

    POST {endpoint}/invocations  {input, params}  Idempotency-Key: <key>
      2xx  activation Succeeded/Failed            -> Succeeded / Failed
      2xx  activation Running                     -> poll
      404                                         -> NotFound
      other 4xx                                   -> Rejected
      5xx, 429, no connection                     -> retried (retry.py), then Error / Unreachable
      lost or timed out after sending             -> not retried: Unreachable / TimedOut
    GET {endpoint}/activations/{id}, after Retry-After or the poll interval, until it is finished;
      failures retried as any idempotent call; 404 -> Error (the agent lost the activation)

Time comes from the injected ``Clock``: every wait (backoff, poll interval) and every request's
timeout is cut to what is left of the deadline, and when the deadline passes the outcome is
TimedOut. The activation id is kept from the first answer that names it, so a TimedOut or failed
poll still says which activation it was.

Progress goes to ``log`` one line at a time; payload values are never logged (they may be large or
secret), only their size; the result of a finished activation is logged, bounded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import quote

from controller.clock import Clock

from .answers import SUCCEEDED, Activation, InvalidAnswer, error_text, parse_activation
from .outcome import InvokeStatus, Outcome
from .payload import InvokeRequest
from .retry import cause_of_status, give_up_status, is_retryable, parse_retry_after, retry_delay
from .settings import InvokeSettings
from .transport import Answer, Transport, TransportError

#: Longest preview of an activation's result written to the log.
MAX_RESULT_LOG = 2000


@dataclass
class _GaveUp(Exception):
    """Raised inside ``Invocation`` to end it with this status (caught in ``run``)."""

    status: InvokeStatus
    error: str


class Deadline:
    def __init__(self, clock: Clock, seconds: float) -> None:
        self._clock = clock
        self.seconds = seconds
        self._at = clock.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self._at - self._clock.monotonic())

    async def sleep(self, delay: float) -> bool:
        """Wait ``delay`` seconds, or until the deadline when that comes first; True iff time is
        left afterwards for another call."""
        remaining = self.remaining()
        await self._clock.sleep(min(delay, remaining))
        return delay < remaining


class Invocation:
    """One request to one agent endpoint; ``run()`` once (module docstring: the steps)."""

    def __init__(self, request: InvokeRequest, endpoint: str, settings: InvokeSettings, transport: Transport,
                 clock: Clock, log: Callable[[str], None], jitter: Callable[[], float]) -> None:
        self.request = request
        self.endpoint = endpoint
        self.settings = settings
        self._transport = transport
        self._clock = clock
        self._log = log
        self._jitter = jitter
        self._deadline = Deadline(clock, settings.deadline)
        # What the outcome reports; updated as answers come in (one task owns them: run()).
        self.activation_id: str | None = None
        self.http_status: int | None = None

    def _outcome(self, status: InvokeStatus, error: str | None = None) -> Outcome:
        return Outcome(agent=self.request.agent, status=status, activation_id=self.activation_id,
                       http_status=self.http_status, error=error)

    async def run(self) -> Outcome:
        body = {"input": self.request.input, "params": self.request.params}
        size = len(json.dumps(body, ensure_ascii=False).encode("utf-8"))
        self._log(f"invoking agent {self.request.agent} at {self.endpoint} "
                  f"(request {size} bytes, Idempotency-Key {self.settings.idempotency_key}, "
                  f"deadline {self.settings.deadline:g}s)")
        try:
            answer = await self._call("POST", f"{self.endpoint}/invocations", body, idempotent=False)
            activation = self._activation(answer, expected_id=None)
            while not activation.finished:
                delay = parse_retry_after(answer.headers.get("Retry-After"), self._clock.now())
                delay = self.settings.poll_interval if delay is None else delay
                self._log(f"activation {activation.id} Running; next poll in {delay:g}s")
                if not await self._deadline.sleep(delay):
                    raise self._timed_out(f"activation {activation.id} still Running")
                url = f"{self.endpoint}/activations/{quote(activation.id, safe='')}"
                answer = await self._call("GET", url, None, idempotent=True)
                activation = self._activation(answer, expected_id=activation.id)
        except _GaveUp as gave_up:
            self._log(f"gave up: {gave_up.status.value}: {gave_up.error}")
            return self._outcome(gave_up.status, gave_up.error)
        return self._finished(activation)

    def interrupted(self, why: str) -> Outcome:
        """The outcome when the action is stopped from outside (SIGTERM: the Job's deadline, a
        Replace, a deleted pod) before the invocation ended."""
        where = f"; activation {self.activation_id} may still be running" if self.activation_id else ""
        self._log(f"stopped by {why}{where}")
        return self._outcome(InvokeStatus.ERROR, f"stopped by {why} before the invocation ended{where}")

    def _finished(self, activation: Activation) -> Outcome:
        if activation.result is not None:
            preview = json.dumps(activation.result, ensure_ascii=False)
            if len(preview) > MAX_RESULT_LOG:
                preview = preview[:MAX_RESULT_LOG] + f"… ({len(preview)} characters)"
            self._log(f"result: {preview}")
        if activation.status == SUCCEEDED:
            self._log(f"activation {activation.id} Succeeded")
            return self._outcome(InvokeStatus.SUCCEEDED)
        error = activation.error or "the agent reported the activation failed"
        self._log(f"activation {activation.id} Failed: {error}")
        return self._outcome(InvokeStatus.FAILED, error)

    def _activation(self, answer: Answer, expected_id: str | None) -> Activation:
        """The activation a 2xx answer holds; any other answer ends the invocation."""
        if answer.status == 404:
            text = error_text(answer.body) or "not found"
            if expected_id is None:
                raise _GaveUp(InvokeStatus.NOT_FOUND, f"agent {self.request.agent} not found (HTTP 404): {text}")
            raise _GaveUp(InvokeStatus.ERROR, f"the agent no longer knows activation {expected_id} (HTTP 404): {text}")
        if 400 <= answer.status <= 499:
            text = error_text(answer.body) or "no reason given"
            raise _GaveUp(InvokeStatus.REJECTED, f"the agent rejected the call (HTTP {answer.status}): {text}")
        if not 200 <= answer.status <= 299:
            raise _GaveUp(InvokeStatus.ERROR, f"unexpected HTTP {answer.status} from the agent")
        try:
            activation = parse_activation(answer.body, expected_id)
        except InvalidAnswer as exc:
            raise _GaveUp(InvokeStatus.ERROR, f"invalid answer (HTTP {answer.status}): {exc}") from exc
        if self.activation_id is None:
            self.activation_id = activation.id
            self._log(f"activation {activation.id} ({activation.status}, HTTP {answer.status})")
        return activation

    def _timed_out(self, what: str) -> _GaveUp:
        return _GaveUp(InvokeStatus.TIMED_OUT, f"deadline of {self._deadline.seconds:g}s passed: {what}")

    async def _call(self, method: str, url: str, body: Any, *, idempotent: bool) -> Answer:
        """One call, retried as retry.py says; returns an answer that is not worth retrying."""
        headers = {"Accept": "application/json"}
        if method == "POST":
            headers["Idempotency-Key"] = self.settings.idempotency_key
        attempt = 0
        while True:
            attempt += 1
            remaining = self._deadline.remaining()
            if remaining <= 0:
                raise self._timed_out(f"before {method} {url}")
            timeout = min(self.settings.request_timeout, remaining)
            self._log(f"{method} {url} (attempt {attempt}/{self.settings.max_attempts})")
            retry_after: float | None = None
            try:
                answer = await self._transport.request(method, url, json_body=body, headers=headers, timeout=timeout)
            except TransportError as exc:
                if exc.timed_out and timeout < self.settings.request_timeout:
                    raise self._timed_out(f"no answer to {method} {url}") from exc
                cause, reason = exc.cause, str(exc)
            except InvalidAnswer as exc:
                raise _GaveUp(InvokeStatus.ERROR, f"invalid answer: {exc}") from exc
            else:
                self.http_status = answer.status
                cause = cause_of_status(answer.status)
                if cause is None:
                    return answer
                reason = f"HTTP {answer.status}: {error_text(answer.body) or 'no reason given'}"
                retry_after = parse_retry_after(answer.headers.get("Retry-After"), self._clock.now())
            if not is_retryable(cause, idempotent):
                raise _GaveUp(give_up_status(cause), f"{method} {url}: {reason}; not retried: "
                                                     "the agent may have accepted the request")
            if attempt >= self.settings.max_attempts:
                raise _GaveUp(give_up_status(cause), f"{method} {url}: {reason} (after {attempt} attempts)")
            delay = retry_delay(attempt, retry_after, self.settings.backoff_base, self.settings.backoff_cap,
                                self._jitter())
            self._log(f"{method} failed ({cause.value}: {reason}); retrying in {delay:.3g}s")
            if not await self._deadline.sleep(delay):
                raise self._timed_out(f"{method} {url} failed ({reason}) and no time is left to retry")


__all__ = ["Deadline", "Invocation"]
