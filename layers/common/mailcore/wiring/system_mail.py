"""The system mail functions (SystemMailFunction, SystemMailEventsFunction, SystemMailQueueFunction,
CognitoEmailSenderFunction): mail of no team from a template, with the system SMTP configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mailcore.adapters.dynamodb import DynamoRateLimits, idempotency_store
from mailcore.adapters.kms import KmsCodeDecrypter
from mailcore.adapters.secretsmanager import SecretsManagerSecrets
from mailcore.errors import TeamConfigInvalid
from mailcore.ports import CodeDecrypter
from mailcore.services.system import (
    SystemMailer,
    SystemMailRequest,
    SystemMailResult,
    cognito_request,
    decrypt_cognito_code,
    load_system_config,
)
from mailcore.settings import SystemMailSettings, read
from mailcore.templates import MailTemplates
from mailcore.wiring import parts, process_root

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer


@dataclass(frozen=True)
class SystemMailRoot:
    mailer: SystemMailer
    decrypter: CodeDecrypter
    idempotency_table: str

    def deliver(
        self,
        request: SystemMailRequest,
        delivery: str | None = None,
        seconds_left: Callable[[], float] | None = None,
    ) -> SystemMailResult:
        """Renders, rate-limits, stores and sends one system mail (services/system.py); at most
        once per `delivery` after a death, unless it carries a code or link (send_once); its SMTP
        session ends in `seconds_left` (less the answer's margin)."""
        return self.mailer.deliver(request, delivery, seconds_left)

    def deliver_cognito(
        self,
        trigger_source: str,
        user_name: str,
        user_attributes: dict[str, str],
        code: str | None,
        delivery: str | None = None,
        seconds_left: Callable[[], float] | None = None,
    ) -> SystemMailResult:
        """The mail the user pool's custom email sender asks for; `code` as Cognito encrypted it
        under the stack's KMS key (none for a notification)."""
        plain = decrypt_cognito_code(code, self.decrypter) if code else None
        request = cognito_request(trigger_source, user_name, user_attributes, plain)
        return self.deliver(request, delivery, seconds_left)

    def idempotency_store(self) -> DynamoDBPersistenceLayer:
        """A persistence layer for one use: Powertools keeps the first configuration a layer is given."""
        if not self.idempotency_table:
            raise TeamConfigInvalid("IDEMPOTENCY_TABLE is not set: this function keeps no delivery records")
        return idempotency_store(self.idempotency_table)


def build(settings: SystemMailSettings, shipped_templates: Path) -> SystemMailRoot:
    storage = parts.aws_storage(settings)
    secrets = SecretsManagerSecrets(settings.secrets_max_age)
    mailer = SystemMailer(
        config=lambda: load_system_config(secrets, settings.system_secret_name),
        templates=MailTemplates(
            shipped_templates,
            blobs=storage.blobs,
            prefix=settings.system_templates_prefix,
            max_age=settings.secrets_max_age,
        ),
        storage=storage,
        rate_limits=DynamoRateLimits(settings.pull_state_table),
        tls_context=parts.tls_context(settings),
        recipient_limit=settings.system_recipient_limit,
        store_secrets=settings.store_system_mail_secrets,
    )
    return SystemMailRoot(
        mailer=mailer,
        decrypter=KmsCodeDecrypter(settings.system_mail_key_arn),
        idempotency_table=settings.idempotency_table,
    )


@process_root
def root(shipped_templates: Path) -> SystemMailRoot:
    return build(read(SystemMailSettings), shipped_templates)
