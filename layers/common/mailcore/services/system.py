"""System mail: messages that belong to no team (password recovery, notifications), sent with
the system SMTP configuration from its own secret, and stored under the reserved team `system`."""

from __future__ import annotations

import ssl
from email.headerregistry import Address
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from mailcore.errors import TeamConfigInvalid
from mailcore.models import Mail, Security, SendRequest, ServerEndpoint, parse_addresses
from mailcore.protocols.transcript import Transcript
from mailcore.services.send import SystemSender, send_mail
from mailcore.storage import Storage
from mailcore.teams import describe_validation_error

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.parameters import SecretsProvider

SYSTEM_TEAM = "system"
SYSTEM_ACCOUNT = "system"


class SystemMailConfig(BaseModel):
    """The JSON of the system mail secret."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    security: Security
    username: str = ""
    password: SecretStr = SecretStr("")
    from_address: str
    from_name: str = ""
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)

    @field_validator("from_address")
    @classmethod
    def _plain_address(cls, value: str) -> str:
        if len(parse_addresses(value)) != 1 or "<" in value:
            raise ValueError("from_address must be one plain address like noreply@example.com")
        return value.strip()

    @property
    def smtp(self) -> ServerEndpoint:
        return ServerEndpoint(host=self.host, port=self.port, security=self.security)

    @property
    def smtp_login(self) -> str:
        return self.username

    @property
    def mail_password(self) -> SecretStr:
        return self.password

    @property
    def mail_from(self) -> str:
        return str(Address(display_name=self.from_name, addr_spec=self.from_address))


def load_system_config(provider: SecretsProvider, secret_name: str) -> SystemMailConfig:
    """Reads the system mail secret (cached like the team secrets: a change takes effect within
    Powertools' max age, no restart)."""
    raw = provider.get(secret_name, transform="json")
    try:
        return SystemMailConfig.model_validate(raw)
    except ValidationError as error:
        message = f"the system mail secret {secret_name!r} is invalid: {describe_validation_error(error)}"
        raise TeamConfigInvalid(message) from None


def send_system_mail(
    config: SystemMailConfig,
    request: SendRequest,
    *,
    storage: Storage,
    transcript: Transcript,
    tls_context: ssl.SSLContext,
) -> Mail:
    sender = SystemSender(team=SYSTEM_TEAM, name=SYSTEM_ACCOUNT, account=config)
    return send_mail(sender, request, storage=storage, transcript=transcript, tls_context=tls_context)
