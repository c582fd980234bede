"""Where the service's resources are: the environment template.yaml gives each function, read and
validated once at the function's init. A missing or malformed variable fails the init with its
name; every default is written here, once.

`Settings` is what every function gets (template.yaml's Globals); each function's composition
root (mailcore.wiring) reads the subclass with the variables of its own resources.

A plain pydantic model validated from os.environ, not pydantic-settings' BaseSettings: the models
import pydantic anyway, while pydantic-settings adds 80-110 ms to every cold start (its sources
import asyncio, dataclasses and more) for a dozen flat variables that need none of its sources."""

from __future__ import annotations

import os
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mailcore.errors import describe_validation_error
from mailcore.protocols.reach import Network, parse_networks

# The template's SecretsMaxAge default: how long a warm function keeps a team secret.
SECRETS_MAX_AGE_SECONDS = 60.0


class Settings(BaseModel):
    # The environment holds every variable of the process: the others are ignored.
    model_config: ClassVar[ConfigDict] = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    mail_table: str = Field(alias="MAIL_TABLE", min_length=1)
    files_table: str = Field(alias="FILES_TABLE", min_length=1)
    pull_state_table: str = Field(alias="PULL_STATE_TABLE", min_length=1)
    bucket: str = Field(alias="MAIL_BUCKET", min_length=1)
    event_bus: str = Field(alias="MAIL_EVENT_BUS", min_length=1)
    team_secret_prefix: str = Field(alias="TEAM_SECRET_PREFIX", min_length=1)
    system_secret_name: str = Field(alias="SYSTEM_MAIL_SECRET_NAME", min_length=1)
    # Team secrets (and the list of teams, and the system mail secret) are cached this long.
    secrets_max_age: float = Field(
        alias="POWERTOOLS_PARAMETERS_MAX_AGE", default=SECRETS_MAX_AGE_SECONDS, ge=0
    )
    # An extra trust anchor for the mail servers' TLS (the local stack's own CA); empty in the cloud.
    tls_ca_file: str = Field(alias="MAIL_TLS_CA_FILE", default="")
    # Networks of mail servers besides the globally routable addresses (protocols/reach.py):
    # comma-separated CIDRs, the template's MailServerNetworks; the local stack's 127.0.0.0/8.
    mail_server_networks: tuple[Network, ...] = Field(alias="MAIL_SERVER_NETWORKS", default=())

    @field_validator("mail_server_networks", mode="before")
    @classmethod
    def _cidrs(cls, value: Any) -> Any:
        return parse_networks(value) if isinstance(value, str) else value


class PullSettings(Settings):
    """The pull functions: the queue of scheduled pulls."""

    pull_queue_url: str = Field(alias="PULL_QUEUE_URL", min_length=1)


class OutboxSettings(Settings):
    """The outbox's functions: where mail that ended failed after its retries is also put."""

    outbox_dlq_url: str = Field(alias="OUTBOX_DLQ_URL", min_length=1)


class SendSettings(OutboxSettings):
    """The send API: also the table of its Idempotency-Key records."""

    idempotency_table: str = Field(alias="IDEMPOTENCY_TABLE", min_length=1)


class SystemMailSettings(Settings):
    """System mail (functions/system_mail, four functions on one code): see services/system.py.
    Only the queue and event functions keep idempotency records, only the Cognito sender decrypts
    codes: those two are empty where the template does not give them, and checked where used."""

    system_templates_prefix: str = Field(alias="SYSTEM_TEMPLATES_PREFIX", default="")
    system_recipient_limit: int = Field(alias="SYSTEM_MAIL_RECIPIENT_LIMIT", default=5, ge=1)
    store_system_mail_secrets: bool = Field(alias="STORE_SYSTEM_MAIL_SECRETS", default=False)
    idempotency_table: str = Field(alias="IDEMPOTENCY_TABLE", default="")
    system_mail_key_arn: str = Field(alias="SYSTEM_MAIL_KEY_ARN", default="")


def read[SettingsT: Settings](kind: type[SettingsT]) -> SettingsT:
    """The settings from the environment; a missing or malformed variable raises ValueError
    naming every such variable (the function's init fails with it)."""
    try:
        return kind.model_validate(dict(os.environ))
    except ValidationError as error:
        raise ValueError(
            f"{kind.__name__} from the environment: {describe_validation_error(error)}"
        ) from None
