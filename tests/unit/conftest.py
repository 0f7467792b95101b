"""Fixtures shared by the unit tests.

Helpers live in plain modules beside the tests (``fakeclock``, ``fakekube``, ``logs_fakes``,
``report_support``, ``s3server``, ``gateway_harness``); test modules import those, never each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fakeclock import FakeClock
from fakekube import FakeKube
from gateway_harness import Gateway, Sections, merge_sections, start_gateway


@pytest.fixture
def clock() -> FakeClock:
    """A stepped clock; time moves only when the test advances it."""
    return FakeClock()


@pytest.fixture
async def kube(clock: FakeClock) -> AsyncIterator[FakeKube]:
    """The in-memory API server (``fakekube.FakeKube``), its timestamps from ``clock``."""
    fake = FakeKube(clock)
    yield fake
    await fake.close()


@pytest.fixture
def gateway_sections() -> Sections:
    """Settings every gateway of a test module gets (``gateway_harness.gateway_settings``);
    a module overrides this fixture to choose its store, tokens or limits."""
    return {}


@pytest.fixture
async def make_gateway(tmp_path: Path, clock: FakeClock, gateway_sections: Sections) -> AsyncIterator[Callable[..., Any]]:
    """``await make_gateway(**sections)``: a started ``gateway_harness.Gateway`` on ``clock``, with
    the module's ``gateway_sections`` and then ``sections`` applied; stopped after the test."""
    started: list[Gateway] = []

    async def make(**sections: dict[str, Any]) -> Gateway:
        gateway = await start_gateway(tmp_path / f"gateway-{len(started)}", merge_sections(gateway_sections, sections),
                                      clock=clock)
        started.append(gateway)
        return gateway

    yield make
    for gateway in started:
        await gateway.close()
