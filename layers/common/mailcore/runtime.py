"""The process-wide wiring of a function: settings, storage, team directory, TLS.

Each is made once, lazily, on first use (a warm Lambda reuses them); tests call `reset()`
after pointing the environment at other resources.
"""

from __future__ import annotations

import ssl
from functools import cache

from mailcore.events import EventPublisher
from mailcore.limits import AccountLimiter
from mailcore.oauth2 import TokenBroker
from mailcore.protocols.tls import client_tls_context
from mailcore.settings import Settings
from mailcore.storage import Storage
from mailcore.teams import TeamDirectory


@cache
def settings() -> Settings:
    return Settings.from_env()


@cache
def storage() -> Storage:
    from mailcore.storage.aws import aws_storage

    return aws_storage(settings())


@cache
def directory() -> TeamDirectory:
    return TeamDirectory(settings().team_secret_prefix)


@cache
def events() -> EventPublisher:
    from mailcore.events import EventBridgePublisher

    return EventBridgePublisher(settings().event_bus)


@cache
def tokens() -> TokenBroker:
    """OAuth2 access tokens of this process; rotated refresh tokens go back to the team secret."""
    return TokenBroker(on_rotated=directory().store_refresh_token)


@cache
def limiter() -> AccountLimiter:
    """Per-account sending limits, counted in the pull state table (shared by all processes)."""
    from mailcore.limits import DynamoLimitCounters

    return AccountLimiter(DynamoLimitCounters(settings().pull_state_table))


def tls_context() -> ssl.SSLContext:
    return client_tls_context(settings().tls_ca_file)


def reset() -> None:
    from mailcore.storage.aws import _session, aws_client

    for made in (
        settings,
        storage,
        directory,
        events,
        tokens,
        limiter,
        aws_client,
        _session,
        client_tls_context,
    ):
        made.cache_clear()
