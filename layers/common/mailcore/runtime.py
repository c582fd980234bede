"""The process-wide wiring of a function: settings, storage, team directory, TLS.

Each is made once, lazily, on first use (a warm Lambda reuses them); tests call `reset()`
after pointing the environment at other resources.
"""

from __future__ import annotations

import ssl
from functools import cache

from mailcore.events import EventPublisher
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


def tls_context() -> ssl.SSLContext:
    return client_tls_context(settings().tls_ca_file)


def reset() -> None:
    from mailcore.storage.aws import _session, aws_client

    for made in (settings, storage, directory, events, aws_client, _session, client_tls_context):
        made.cache_clear()
