"""The process-wide wiring of a function: settings, storage, team directory, TLS.

Each is made once, lazily, on first use (a warm Lambda reuses them); tests call `reset()`
after pointing the environment at other resources.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from mailcore.events import EventPublisher
from mailcore.limits import AccountLimiter
from mailcore.oauth2 import TokenBroker
from mailcore.protocols.tls import client_tls_context
from mailcore.settings import Settings
from mailcore.storage import Storage
from mailcore.teams import TeamDirectory

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from mailcore.protocols.transcript import Transcript
    from mailcore.services.accounts import Accounts
    from mailcore.services.dispatch import PullQueue
    from mailcore.services.outbox import Outbox
    from mailcore.services.send import DirectSend
    from mailcore.services.system import SystemMailer
    from mailcore.services.team_writes import AccountRevisions


def _utc_now() -> datetime:
    return datetime.now(UTC)


# The time of the outbox's schedules (send_at, next attempts, leases): tests replace it to move
# time by hours without sleeping.
clock: Callable[[], datetime] = _utc_now


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


def idempotency_store() -> DynamoDBPersistenceLayer:
    """A persistence layer for ONE idempotency configuration: Powertools keeps the first
    configuration a layer is given, so two uses (send's keys, system mail's) must not share one."""
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    from mailcore.storage.aws import aws_client

    return DynamoDBPersistenceLayer(
        table_name=settings().idempotency_table,
        boto3_client=aws_client("dynamodb"),
    )


def outbox(transcript: Transcript | None = None, seconds_left: Callable[[], float] | None = None) -> Outbox:
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
        tokens=tokens(),
        limiter=limiter(),
        seconds_left=seconds_left,
        clock=lambda: clock(),
    )


def direct_send() -> DirectSend:
    """Sending one mail now: the outbox's delivery without a claim (services/send.py)."""
    from mailcore.services.send import DirectSend
    from mailcore.storage.aws import SqsDeadLetters

    return DirectSend(
        storage=storage(),
        tls_context=tls_context(),
        tokens=tokens(),
        limiter=limiter(),
        events=events(),
        dead_letters=SqsDeadLetters(settings().outbox_dlq_url),
        clock=lambda: clock(),
    )


@cache
def accounts() -> Accounts:
    """The accounts API's use cases: team secrets written under the team's writer lease."""
    from mailcore.services.accounts import Accounts, check_account
    from mailcore.storage.team_secrets import SecretsManagerTeamSecrets

    return Accounts(
        secrets=SecretsManagerTeamSecrets(settings().team_secret_prefix),
        revisions=account_revisions(),
        storage=storage(),
        events=events(),
        checker=lambda team, name, account: check_account(team, name, account, tls_context=tls_context()),
        on_written=lambda: directory().provider.clear_cache(),
    )


@cache
def tokens() -> TokenBroker:
    """OAuth2 access tokens of this process; rotated refresh tokens go back to the team secret,
    under the team's writer lease (services/accounts.py), so no account change is lost."""
    from mailcore.services.team_writes import keep_rotated_refresh_token

    def keep(team: str, account: str, refresh_token: str) -> None:
        keep_rotated_refresh_token(
            account_revisions(), directory().store_refresh_token, team, account, refresh_token
        )

    return TokenBroker(on_rotated=keep)


@cache
def account_revisions() -> AccountRevisions:
    from mailcore.storage.team_secrets import DynamoAccountRevisions

    return DynamoAccountRevisions(settings().pull_state_table)


@cache
def limiter() -> AccountLimiter:
    """Per-account sending limits, counted in the pull state table (shared by all processes)."""
    from mailcore.limits import DynamoLimitCounters

    return AccountLimiter(DynamoLimitCounters(settings().pull_state_table))


def tls_context() -> ssl.SSLContext:
    return client_tls_context(settings().tls_ca_file)


@cache
def system_mailer(shipped_templates: Path) -> SystemMailer:
    from mailcore.services.system import SystemMailer, load_system_config
    from mailcore.storage.aws import DynamoRateLimits
    from mailcore.templates import MailTemplates

    found = settings()
    max_age = float(os.environ.get("POWERTOOLS_PARAMETERS_MAX_AGE", "60"))
    return SystemMailer(
        config=lambda: load_system_config(directory().provider, found.system_secret_name),
        templates=MailTemplates(
            shipped_templates,
            blobs=storage().blobs,
            prefix=found.system_templates_prefix,
            max_age=max_age,
        ),
        storage=storage(),
        rate_limits=DynamoRateLimits(found.pull_state_table),
        tls_context=tls_context,
        recipient_limit=found.system_recipient_limit,
        store_secrets=found.store_system_mail_secrets,
    )


def reset() -> None:
    from mailcore.storage.aws import _session, aws_client

    for made in (
        settings,
        storage,
        directory,
        events,
        pull_queue,
        tokens,
        limiter,
        aws_client,
        _session,
        client_tls_context,
        system_mailer,
        accounts,
        account_revisions,
    ):
        made.cache_clear()
