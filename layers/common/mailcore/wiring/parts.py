"""The pieces several roots share, each built from settings with its AWS adapters."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

from mailcore.adapters.dynamodb import (
    DynamoAccountRevisions,
    DynamoFiles,
    DynamoLimitCounters,
    DynamoMail,
    DynamoPullState,
)
from mailcore.adapters.eventbridge import EventBridgePublisher
from mailcore.adapters.s3 import S3Blobs
from mailcore.adapters.secretsmanager import SecretsManagerSecrets
from mailcore.limits import AccountLimiter
from mailcore.oauth2 import TokenBroker
from mailcore.protocols import reach
from mailcore.protocols.tls import client_tls_context
from mailcore.services.team_writes import keep_rotated_refresh_token
from mailcore.settings import Settings
from mailcore.storage import Storage
from mailcore.teams import TeamDirectory
from mailcore.telemetry import MeteredPublisher


def aws_storage(settings: Settings) -> Storage:
    blobs = S3Blobs(settings.bucket)
    return Storage(
        mail=DynamoMail(settings.mail_table, blobs),
        files=DynamoFiles(settings.files_table),
        blobs=blobs,
        pull_state=DynamoPullState(settings.pull_state_table),
    )


def team_directory(settings: Settings) -> TeamDirectory:
    return TeamDirectory(
        settings.team_secret_prefix,
        SecretsManagerSecrets(settings.secrets_max_age),
        list_max_age=settings.secrets_max_age,
    )


def event_publisher(settings: Settings) -> MeteredPublisher:
    """The mail bus; each mail outcome is counted as a metric where its event is published."""
    return MeteredPublisher(EventBridgePublisher(settings.event_bus))


def token_broker(settings: Settings, directory: TeamDirectory) -> TokenBroker:
    """OAuth2 access tokens of this process; rotated refresh tokens go back to the team secret,
    under the team's writer lease (services/accounts.py), so no account change is lost."""
    revisions = DynamoAccountRevisions(settings.pull_state_table)

    def keep(team: str, account: str, refresh_token: str) -> None:
        keep_rotated_refresh_token(revisions, directory.store_refresh_token, team, account, refresh_token)

    return TokenBroker(on_rotated=keep)


def mail_parts(settings: Settings) -> dict[str, Any]:
    """What pulling and sending both use: storage, directory, events, tokens, tls_context."""
    directory = team_directory(settings)
    return {
        "storage": aws_storage(settings),
        "directory": directory,
        "events": event_publisher(settings),
        "tokens": token_broker(settings, directory),
        "tls_context": tls_context(settings),
    }


def account_limiter(settings: Settings) -> AccountLimiter:
    """Per-account sending limits, counted in the pull state table (shared by all processes)."""
    return AccountLimiter(DynamoLimitCounters(settings.pull_state_table))


def tls_context(settings: Settings) -> Callable[[], ssl.SSLContext]:
    """How this process reaches mail servers: TLS with the settings' trust anchor, and (set for the
    whole process here, where every root that connects passes) the networks it may connect to."""
    reach.allow_networks(settings.mail_server_networks)
    return lambda: client_tls_context(settings.tls_ca_file)
