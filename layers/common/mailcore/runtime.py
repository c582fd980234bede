"""The process-wide wiring of a function: settings, storage, team directory, TLS.

Each is made once, lazily, on first use (a warm Lambda reuses them); tests call `reset()`
after pointing the environment at other resources.
"""

from __future__ import annotations

import ssl
from functools import cache
from typing import TYPE_CHECKING

from mailcore.events import EventPublisher
from mailcore.protocols.tls import client_tls_context
from mailcore.settings import Settings
from mailcore.storage import Storage
from mailcore.teams import TeamDirectory

if TYPE_CHECKING:
    from mailcore.services.dispatch import PullQueue


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
def pull_queue() -> PullQueue:
    from mailcore.services.dispatch import SqsPullQueue

    return SqsPullQueue(settings().pull_queue_url)


def tls_context() -> ssl.SSLContext:
    return client_tls_context(settings().tls_ca_file)


def reset() -> None:
    from mailcore.storage.aws import aws_client

    for made in (settings, storage, directory, events, pull_queue, aws_client, client_tls_context):
        made.cache_clear()
