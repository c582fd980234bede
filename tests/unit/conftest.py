"""Fixtures the unit tests share: a fresh in-memory store, an event publisher and a clock the
test sets. Builders both kinds of tests share (accounts, events, function handlers) are in
tests/support.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mailcore.protocols import reach

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


@pytest.fixture(autouse=True)
def _mail_servers_on_loopback() -> Iterator[None]:
    """The unit tests' fake mail servers listen on 127.0.0.1, which the local stack allows as well
    (MAIL_SERVER_NETWORKS); tests of the refusal set the networks they mean."""
    before = reach.allowed_networks()
    reach.allow_networks(reach.parse_networks("127.0.0.0/8"))
    yield
    reach.allow_networks(before)
