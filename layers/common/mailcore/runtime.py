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
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from mailcore.protocols.transcript import Transcript
    from mailcore.services.outbox import Outbox


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
def idempotency_store() -> DynamoDBPersistenceLayer:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from mailcore.storage.aws import aws_client

    return DynamoDBPersistenceLayer(
        table_name=settings().idempotency_table,
        boto3_client=aws_client("dynamodb"),
    )


def outbox(transcript: Transcript | None = None) -> Outbox:
    """A sender of queued mail for one invocation (it holds that run's SMTP connections)."""
    from mailcore.services.outbox import Outbox
    from mailcore.storage.aws import SqsDeadLetters

    return Outbox(
        storage=storage(),
        directory=directory(),
        events=events(),
        dead_letters=SqsDeadLetters(settings().outbox_dlq_url),
        tls_context=tls_context(),
        transcript=transcript,
    )


def tls_context() -> ssl.SSLContext:
    return client_tls_context(settings().tls_ca_file)


def reset() -> None:
    from mailcore.storage.aws import aws_client

    for made in (settings, storage, directory, events, idempotency_store, aws_client, client_tls_context):
        made.cache_clear()
