"""Fixtures of the wallet tests."""

import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def fresh_throttle_counters():
    """Throttle counters live in the process-wide cache; no test inherits another's."""
    cache.clear()
    yield
    cache.clear()
