"""Schemathesis fuzzes every operation of ``/openapi.json`` against the real app on a loopback
port (temporary SQLite file and blob directory, the internal token on ``/internal`` routes, a user
token on ``/v1`` routes that may read every namespace and write only in ``default``, so the
schedule operations answer 403 for any other namespace): no answer may be a 5xx, and every answer must conform to the document (status code documented,
content type, headers, body schema), schema-violating input must be refused with a 4xx.

Authentication is checked too (schemathesis' ``ignored_auth``): each secured operation is also
sent without its token and must answer 401.

Not checked: that every schema-valid request is accepted (schemathesis' ``positive_data_acceptance``).
The API has rules OpenAPI 3.0 cannot state, and a request breaking one is rightly a 400: opaque
cursors and upload offsets only the server hands out, cron and time-zone syntax, ``tail`` excluding
``limit``, ``before`` above ``after``, a finalize size equal to the stored one.

The one allowed 5xx: the schedule operations answer 503 ``kubernetes_not_configured`` here,
because this gateway has no Kubernetes access (their success paths run in
``tests/e2e/test_gateway_schedule_ops.py``); their input checks still run first and are fuzzed.

Bounded: 30 examples per operation (``GATEWAY_FUZZ_EXAMPLES`` to change) keep the run well under a minute. The
app runs on its own event loop in a thread, since schemathesis calls it synchronously.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import tempfile
import threading
from typing import Any, Iterator

import pytest
import structlog
from hypothesis import HealthCheck, settings
from prometheus_client import CollectorRegistry

pytest.importorskip("schemathesis", reason="pip install schemathesis (the test extra)")
import schemathesis  # noqa: E402
from schemathesis.specs.openapi.checks import positive_data_acceptance  # noqa: E402

from gateway import openapi  # noqa: E402
from gateway.auth import parse_user_tokens  # noqa: E402
from gateway.clock import RealClock  # noqa: E402
from gateway.server import RunningGateway, start  # noqa: E402
from gateway.settings import AuthSettings, HttpSettings, LogSettings, Settings, StorageSettings  # noqa: E402

TOKEN = "fuzz-" + "0" * 16
USER_TOKEN = "fuzz-user-" + "1" * 16
USER_TOKENS = parse_user_tokens(json.dumps({"tokens": [{"user": "fuzz", "token": USER_TOKEN, "read": ["*"], "write": ["default"]}]}))
MAX_EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "30"))
EXCLUDED = [positive_data_acceptance]
SCHEDULE_OPERATIONS = {"pauseTask", "resumeTask", "runTask", "deleteTask", "invokeAgent"}

schema = schemathesis.openapi.from_dict(openapi.spec())


class _Background:
    """The gateway on its own event loop in a daemon thread; ``stop`` shuts it down cleanly."""

    def __init__(self, settings: Settings) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="fuzzed-gateway", daemon=True)
        self.thread.start()
        logger = structlog.wrap_logger(structlog.PrintLogger(file=io.StringIO()))
        self.running: RunningGateway = self._run(
            start(settings, clock=RealClock(), registry=CollectorRegistry(), logger=logger)
        )

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def stop(self) -> None:
        try:
            self._run(self.running.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=30)
            self.loop.close()


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="gateway-fuzz-") as tmp:
        gw = _Background(
            Settings(
                http=HttpSettings(host="127.0.0.1", port=0, shutdown_timeout=5),
                storage=StorageSettings(database_url=f"sqlite:///{tmp}/tasks.db", blob_dir=f"{tmp}/blobs", fsync=False),
                # The fuzzer sends wrong and missing tokens from one address by design; the rate
                # limit of failures (429) has its own tests (test_gateway_tokens.py).
                auth=AuthSettings(internal_token=TOKEN, user_tokens=USER_TOKENS, require_auth=True,
                                  failure_burst=1_000_000),
                # A follow of an execution another example created would wait for bytes: not long.
                logs=LogSettings(follow_idle_timeout=1.0),
            )
        )
        try:
            yield gw.running.public_url
        finally:
            gw.stop()


@schema.parametrize()
# No health checks: they judge generation speed and size, which vary with the machine's load (two
# cores shared with other test runs), not the API.
@settings(max_examples=MAX_EXAMPLES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_openapi_fuzz(case: schemathesis.Case, base_url: str) -> None:
    headers = None
    if case.path.startswith("/internal/"):
        headers = {"Authorization": f"Bearer {TOKEN}"}
    elif case.path.startswith("/v1/"):
        headers = {"Authorization": f"Bearer {USER_TOKEN}"}
    op_id = case.operation.definition.raw.get("operationId")
    if op_id in SCHEDULE_OPERATIONS:
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "kubernetes_not_configured", response.text
            assert (case.query or {}).get("namespace", "default") == "default", response.text
            return
        if response.status_code == 403:
            assert response.json()["error"]["code"] == "forbidden", response.text
            assert (case.query or {}).get("namespace", "default") != "default", response.text
        assert response.status_code < 500, response.text
        case.validate_response(response, excluded_checks=EXCLUDED)
        return
    case.call_and_validate(base_url=base_url, headers=headers, excluded_checks=EXCLUDED, timeout=30)
