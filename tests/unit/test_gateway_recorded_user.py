"""The user recorded on an invoked Task is the token's (``gateway.auth.recorded_user``): the
rule as a table, then on the real app with user tokens (no Kubernetes: an accepted body gets as
far as 503 ``kubernetes_not_configured``, a refused one stops at 403 before it). That the created
Task carries the token's user is checked against the devcluster in
``tests/e2e/test_taskctl_through_gateway.py``."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

import aiohttp
import pytest
from fakeclock import FakeClock
from prometheus_client import CollectorRegistry
from gateway_harness import bearer, capture_logger, gateway_settings

from gateway.auth import ANONYMOUS, Forbidden, parse_user_tokens, recorded_user
from gateway.server import start

ANN = "ann-" + uuid.uuid4().hex  # reads and writes team-a
USERS = parse_user_tokens(json.dumps({"tokens": [{"user": "ann", "token": ANN, "read": ["team-a"], "write": ["team-a"]}]}))
ANN_PRINCIPAL = USERS.lookup(ANN)


@pytest.mark.parametrize(
    "principal, claimed, recorded",
    [
        pytest.param(ANN_PRINCIPAL, None, "ann", id="token-user-when-absent"),
        pytest.param(ANN_PRINCIPAL, "ann", "ann", id="same-user-accepted"),
        pytest.param(ANN_PRINCIPAL, "mallory", Forbidden, id="other-user-refused"),
        pytest.param(ANONYMOUS, "dev", "dev", id="open-gateway-keeps-body"),
        pytest.param(ANONYMOUS, None, None, id="open-gateway-none"),
    ],
)
def test_recorded_user(principal, claimed, recorded) -> None:
    if recorded is Forbidden:
        with pytest.raises(Forbidden, match="may not create Tasks as 'mallory'"):
            recorded_user(principal, claimed)
    else:
        assert recorded_user(principal, claimed) == recorded


@pytest.mark.parametrize(
    "body, status, code",
    [
        pytest.param({"input": "in"}, 503, "kubernetes_not_configured", id="no-user"),
        pytest.param({"input": "in", "user": "ann"}, 503, "kubernetes_not_configured", id="own-user"),
        pytest.param({"input": "in", "user": "root"}, 403, "forbidden", id="someone-else"),
    ],
)
async def test_invoke_refuses_a_body_user_other_than_the_token(tmp_path: Path, body, status, code) -> None:
    running = await start(gateway_settings(tmp_path, {"auth": {"user_tokens": USERS, "require_auth": True}}), clock=FakeClock(), registry=CollectorRegistry(),
                          logger=capture_logger(io.StringIO()))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(running.public_url + "/v1/agents/hubble/invoke?namespace=team-a", json=body,
                                 headers=bearer(ANN)) as resp:
                answer = await resp.json()
                assert (resp.status, answer["error"]["code"]) == (status, code), answer
    finally:
        await running.stop()
