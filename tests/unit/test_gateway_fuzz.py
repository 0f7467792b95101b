"""Schemathesis fuzzes every operation of ``/openapi.json`` against the real app on a loopback
port (temporary SQLite file and blob directory, the internal token on ``/internal`` routes):
no answer may be a 5xx, and every answer must conform to the document (status code documented,
content type, headers, body schema), schema-violating input must be refused with a 4xx.

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
from schemathesis.specs.openapi.checks import ignored_auth, positive_data_acceptance  # noqa: E402

from gateway import openapi  # noqa: E402
from gateway.clock import RealClock  # noqa: E402
from gateway.server import RunningGateway, start  # noqa: E402
from gateway.settings import AuthSettings, HttpSettings, LogSettings, Settings, StorageSettings  # noqa: E402

TOKEN = "fuzz-" + "0" * 16
MAX_EXAMPLES = int(os.environ.get("GATEWAY_FUZZ_EXAMPLES", "30"))
EXCLUDED = [ignored_auth, positive_data_acceptance]
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
                auth=AuthSettings(internal_token=TOKEN),
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
    headers = {"Authorization": f"Bearer {TOKEN}"} if case.path.startswith("/internal/") else None
    op_id = case.operation.definition.raw.get("operationId")
    if op_id in SCHEDULE_OPERATIONS:
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        if response.status_code == 503:
            assert response.json()["error"]["code"] == "kubernetes_not_configured", response.text
            return
        assert response.status_code < 500, response.text
        case.validate_response(response, excluded_checks=EXCLUDED)
        return
    case.call_and_validate(base_url=base_url, headers=headers, excluded_checks=EXCLUDED, timeout=30)
