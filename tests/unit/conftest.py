"""Fixtures shared by the unit tests.

Helpers live in plain modules beside the tests (``fakeclock``, ``fakekube``, ``logs_fakes``,
``report_support``, ``s3server``, ``gateway_harness``); test modules import those, never each other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from fakeclock import FakeClock
from fakekube import FakeKube


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
