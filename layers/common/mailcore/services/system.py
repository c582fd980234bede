"""System mail: messages that belong to no team (password recovery, notifications), sent with
the system SMTP configuration from its own secret, and stored under the reserved team `system`.

A request names a template and its variables (see mailcore.templates); every recipient gets at
most `recipient_limit` mails of one template an hour; the values of secret variables (codes,
reset links) go out in the mail but are stored, and logged, only as a placeholder, unless the
deployment asks to store them (StoreSystemMailSecrets).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.utils import getaddresses
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from mailcore.errors import InvalidInput, TeamConfigInvalid, describe_validation_error
from mailcore.models import (
    AddressList,
    Mail,
    MailStatus,
    Security,
    SendRequest,
    ServerEndpoint,
    parse_addresses,
)
from mailcore.protocols.transcript import Transcript
from mailcore.services.send import DirectSend, EarlierAttempt, RequestKey, SystemSender
from mailcore.storage import RateLimits, Storage
from mailcore.teams import SYSTEM_ACCOUNT, SYSTEM_TEAM
from mailcore.templates import MailTemplates, RenderedMail

if TYPE_CHECKING:
    from mailcore.ports import CodeDecrypter, SecretReader


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


def load_system_config(secrets: SecretReader, secret_name: str) -> SystemMailConfig:
    """Reads the system mail secret (cached like the team secrets: a change takes effect within
    their max age, no restart)."""
    try:
        raw = secrets.cached_json(secret_name)
    except ValueError as error:
        raise TeamConfigInvalid(str(error)) from None
    if raw is None:
        raise TeamConfigInvalid(f"the system mail secret {secret_name!r} does not exist")
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
    stored_as: SendRequest | None = None,
    once: RequestKey | None = None,
    seconds_left: Callable[[], float] | None = None,
) -> Mail:
    """`seconds_left`: the trigger's time for the mail (its function's time left, less what the
    trigger does after it); the SMTP session ends ANSWER_MARGIN_SECONDS before it."""
    sender = SystemSender(team=SYSTEM_TEAM, name=SYSTEM_ACCOUNT, config=config)
    direct = DirectSend(storage=storage, tls_context=tls_context, seconds_left=seconds_left)
    return direct.send(sender, request, transcript=transcript, stored_as=stored_as, once=once)


# More stored attempts of one delivery than its trigger ever retries (SQS: 3 receives, Lambda's
# asynchronous invocation: 3 runs): a bound on the look-ups, never reached in practice.
MAX_DELIVERY_ATTEMPTS = 10


def send_once(
    delivery: str | None, template: str, resend_unfinished: bool, send: Callable[[RequestKey | None], Mail]
) -> Mail:
    """Sends a system mail at most once per `delivery` (what names the request across its
    retries: an SQS message id, an EventBridge event id, a Lambda request id), unless a retry
    after a failure or, for `resend_unfinished`, after a death must send it again.

    Attempt n of a delivery has the mail id derived from (delivery, n) (ids.keyed_mail_id, as a
    keyed direct send's), so a retry reads what the attempts before it stored. `failed`: nothing
    went out, the next attempt sends. `sent`/`bounced`: answered, not sent again. `sending`
    (its run died) or `unknown` (the connection dropped after the message): it may have been
    delivered, so it is answered as it is, not sent again, unless `resend_unfinished` (a
    one-time code or link: a second copy of it is harmless, a lost one locks the user out)."""
    if delivery is None:
        return send(None)
    digest = hashlib.sha256(f"system-mail\0{template}".encode()).hexdigest()  # no variable in it
    earlier = None
    for attempt in range(MAX_DELIVERY_ATTEMPTS):
        try:
            return send(RequestKey(caller=SYSTEM_ACCOUNT, key=f"{delivery}#{attempt}", digest=digest))
        except EarlierAttempt as found:
            earlier = found.mail
            if earlier.status != MailStatus.FAILED and not resend_unfinished:
                return earlier
    assert earlier is not None
    return earlier


MAX_VARIABLES_BYTES = 64 * 1024


class SystemMailRequest(BaseModel):
    """What an application asks for: `{"template", "to", "variables"}` (EventBridge detail, SQS
    message body or direct invocation)."""

    model_config = ConfigDict(extra="forbid")

    template: str = Field(min_length=1, max_length=64)
    to: AddressList = Field(min_length=1, max_length=10)
    variables: dict[str, Any] = Field(default_factory=dict)

    @field_validator("variables")
    @classmethod
    def _small_enough(cls, variables: dict[str, Any]) -> dict[str, Any]:
        # A notification, not a payload: a direct invocation may carry 6 MB, and a mail rendered
        # from megabytes of variables would outgrow what storage keeps in one item.
        if len(json.dumps(variables, default=str).encode()) > MAX_VARIABLES_BYTES:
            raise ValueError(f"must be at most {MAX_VARIABLES_BYTES // 1024} KB as JSON")
        return variables


@dataclass(frozen=True)
class SystemMailResult:
    # "sent", or "rate_limited": a recipient had its share of the template this hour; dropped, not retried.
    status: str
    mail_id: str | None = None
    template: str = ""  # which template was asked for (logged; the variables never are)


@dataclass
class SystemMailer:
    """Everything system mail needs; `config` re-reads the (cached) secret on every call."""

    config: Callable[[], SystemMailConfig]
    templates: MailTemplates
    storage: Storage
    rate_limits: RateLimits
    tls_context: Callable[[], ssl.SSLContext]
    recipient_limit: int = 5
    store_secrets: bool = False
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def deliver(
        self,
        request: SystemMailRequest,
        delivery: str | None = None,
        seconds_left: Callable[[], float] | None = None,
    ) -> SystemMailResult:
        """Renders, rate-limits, stores and sends one system mail; `delivery` names the request
        across its trigger's retries (see send_once); `seconds_left`, the trigger's time for it
        (send_system_mail): a server too slow for it fails the mail, stored `failed`, in time.

        Raises InvalidInput (unknown template, missing variable), TeamConfigInvalid (broken
        secret or template) and MailServerError (the mail is then stored as failed)."""
        rendering = self.templates.render(request.template, request.variables)
        if not self._within_limit(request):
            return SystemMailResult(status="rate_limited", template=request.template)
        sent = _as_send_request(request, rendering.sent)
        stored = None if self.store_secrets else _as_send_request(request, rendering.stored)
        transcript = Transcript(rendering.secret_values)
        config, tls_context = self.config(), self.tls_context()

        def send(once: RequestKey | None) -> Mail:
            return send_system_mail(
                config,
                sent,
                storage=self.storage,
                transcript=transcript,
                tls_context=tls_context,
                stored_as=stored,
                once=once,
                seconds_left=seconds_left,
            )

        mail = send_once(delivery, request.template, bool(rendering.secret_values), send)
        return SystemMailResult(status=mail.status.value, mail_id=mail.id, template=request.template)

    def _within_limit(self, request: SystemMailRequest) -> bool:
        now = self.clock()
        window = now.replace(minute=0, second=0, microsecond=0)
        expires_at = int((window + timedelta(hours=2)).timestamp())
        for _, address in getaddresses(request.to):
            # Hashed: the state table never holds a recipient's address in clear.
            recipient = hashlib.sha256(address.strip().lower().encode()).hexdigest()[:32]
            key = f"system#{request.template}#{recipient}"
            if not self.rate_limits.take(
                key, window.strftime("%Y-%m-%dT%H"), limit=self.recipient_limit, expires_at=expires_at
            ):
                return False
        return True


def _as_send_request(request: SystemMailRequest, rendered: RenderedMail) -> SendRequest:
    return SendRequest(
        to=request.to,
        subject=rendered.subject,
        body_text=rendered.body_text,
        body_html=rendered.body_html,
    )


# ---------------------------------------------------------------- Cognito custom email sender
# Which template each Cognito trigger source sends; the code is the variable `code` of each.
COGNITO_TEMPLATES = {
    "CustomEmailSender_ForgotPassword": "password_recovery",
    "CustomEmailSender_SignUp": "verification",
    "CustomEmailSender_ResendCode": "verification",
    "CustomEmailSender_VerifyUserAttribute": "verification",
    "CustomEmailSender_UpdateUserAttribute": "verification",
    "CustomEmailSender_AdminCreateUser": "invitation",
    "CustomEmailSender_AccountTakeOverNotification": "notification",
}


def cognito_request(
    trigger_source: str, user_name: str, user_attributes: dict[str, str], code: str | None
) -> SystemMailRequest:
    """The system mail Cognito asks for with this trigger, to the user's e-mail address."""
    template = COGNITO_TEMPLATES.get(trigger_source)
    if template is None:
        raise InvalidInput(f"Cognito trigger {trigger_source!r} is not handled", field="triggerSource")
    email = user_attributes.get("email", "")
    if not email:
        raise InvalidInput("the user has no email attribute", field="request.userAttributes.email")
    name = user_attributes.get("name") or user_attributes.get("given_name") or email.partition("@")[0]
    variables: dict[str, Any] = {"name": name, "username": user_name}
    if template == "notification":
        variables |= {
            "title": "Unusual sign-in to your account",
            "message": "We noticed a sign-in to your account that looked unusual. If it was not "
            "you, change your password now.",
        }
    elif code is not None:
        variables["code"] = code
    return SystemMailRequest(template=template, to=[email], variables=variables)


def decrypt_cognito_code(encrypted: str, decrypter: CodeDecrypter) -> str:
    """The code Cognito encrypted with the AWS Encryption SDK under the stack's KMS key."""
    try:
        ciphertext = base64.b64decode(encrypted, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput("the code is not base64", field="request.code") from None
    return decrypter.decrypt(ciphertext).decode("utf-8")
