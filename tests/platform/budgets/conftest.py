"""Fixtures for budgets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from costline.redis_client import client
from tests.platform.dashboards.conftest import Member, sign_in

__all__ = ["Member", "redis_db", "sign_in"]  # sign_in: members of each role (the budget pages' tests)


@pytest.fixture
def redis_db() -> Iterator[None]:
    """The test Redis database (REDIS_URL names one per run), empty before and after."""
    client().flushdb()
    yield
    client().flushdb()
