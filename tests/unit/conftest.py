"""Fixtures the unit tests share: a fresh in-memory store, an event publisher and a clock the
test sets. Builders both kinds of tests share (accounts, events, function handlers) are in
tests/support.py."""

from __future__ import annotations

from typing import Any

import pytest

from tests.fakes import MemoryPublisher, memory_storage
from tests.support import Clock


@pytest.fixture
def storage() -> Any:
    """Every store of the service in memory, empty."""
    return memory_storage()


@pytest.fixture
def events() -> MemoryPublisher:
    """Collects what the service publishes on its event bus."""
    return MemoryPublisher()


@pytest.fixture
def clock() -> Clock:
    return Clock()
