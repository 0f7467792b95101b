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
from pgserver import create_database, drop_database, postgres_server  # noqa: F401 - postgres_server: the session's server


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


@pytest.fixture
async def database_url(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A fresh database for the test's records: a SQLite file, or a database of its own on the
    session's ``postgres_server``; ``store_kind`` (sqlite | postgres | s3) is the module's fixture."""
    if store_kind in ("sqlite", "s3"):
        yield f"sqlite:///{tmp_path}/db/tasks.db"
        return
    url = await create_database(request.getfixturevalue("postgres_server"))
    yield url
    await drop_database(url)
