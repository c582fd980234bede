"""The service's data: team configuration, requests, stored mail and files, reports.

Everything that crosses the API or a secret is validated here, once, with pydantic.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import getaddresses
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    WithJsonSchema,
    field_serializer,
    field_validator,
    model_validator,
)

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# A mail server's name or address: a DNS name, an IPv4 address or an IPv6 address (no spaces,
# no scheme, no path: anything else would reach the resolver or a protocol line as it came).
HOST_PATTERN = r"^(?:\w(?:[\w.-]*\w)?\.?|\[?[0-9A-Fa-f:.]+\]?)$"
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_ID = re.compile(ID_PATTERN)


_PROTOCOL_LINE_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")


def _one_protocol_line(value: object) -> object:
    """Text that goes into a POP3/SMTP command line (a login, a password, a token) holds no control
    character: a CR or LF in it would end the command and start another one on the team's session
    (poplib sends what it is given). The message never repeats the value: it may be a secret."""
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if isinstance(text, str) and _PROTOCOL_LINE_UNSAFE.search(text):
        raise ValueError("must not contain control characters (line breaks, tabs, NUL)")
    return value


def _at_most(limit: int) -> AfterValidator:
    def check(value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) > limit:
            raise ValueError(f"must be at most {limit} characters")
        return value

    return AfterValidator(check)


LoginText = Annotated[str, AfterValidator(_one_protocol_line)]
Password = Annotated[SecretStr, AfterValidator(_one_protocol_line), _at_most(1024)]
ClientSecret = Annotated[SecretStr, AfterValidator(_one_protocol_line), _at_most(1024)]
# Microsoft's refresh tokens run to a few KB; 8 KB leaves room and still bounds the team secret.
RefreshToken = Annotated[SecretStr, AfterValidator(_one_protocol_line), _at_most(8192)]


class Security(StrEnum):
    SSL = "ssl"
    STARTTLS = "starttls"
    NONE = "none"


class ServerEndpoint(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(min_length=1, max_length=253, pattern=HOST_PATTERN)
    port: int = Field(ge=1, le=65535)
    security: Security
    # The login on this server when it differs from the account's mail_username (Gmail's POP3
    # wants "recent:<address>", its SMTP the plain address).
    username: LoginText | None = Field(default=None, min_length=1, max_length=320)


class OAuth2Provider(StrEnum):
    MICROSOFT = "microsoft"
    GOOGLE = "google"
    GENERIC = "generic"


class Pop3AuthForm(StrEnum):
    """How POP3 sends the XOAUTH2 payload: after the server's `+` (RFC 5034's exchange, the only
    form Microsoft accepts) or as an initial response on the AUTH line (one round trip less)."""

    TWO_STEP = "two-step"
    ONE_LINE = "one-line"


MICROSOFT_SCOPE = "https://outlook.office365.com/.default"
MICROSOFT_DELEGATED_SCOPE = "https://outlook.office365.com/POP.AccessAsUser.All https://outlook.office365.com/SMTP.Send offline_access"
GOOGLE_SCOPE = "https://mail.google.com/"
MICROSOFT_TOKEN_URL = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token"
GOOGLE_TOKEN_URL = "https://oauth2.googleapis.com/token"
# Exchange Online's limits per mailbox: 3 concurrent SMTP connections, 30 messages a minute.
MICROSOFT_MAX_CONNECTIONS = 3
MICROSOFT_MAX_MESSAGES_PER_MINUTE = 30


class PasswordAuth(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["password"] = "password"


class OAuth2Auth(BaseModel):
    """OAuth2 (SASL XOAUTH2) logins. With a `refresh_token` the refresh-token grant is used
    (Google; Microsoft delegated), without one the client-credentials grant (Microsoft app-only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["oauth2"]
    provider: OAuth2Provider
    client_id: LoginText = Field(min_length=1, max_length=256)
    client_secret: ClientSecret | None = None
    refresh_token: RefreshToken | None = None
    tenant_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9.-]{1,128}$")
    token_url: str | None = Field(default=None, max_length=2048, pattern=r"^https?://[^\s]+$")
    scope: LoginText | None = Field(default=None, min_length=1, max_length=1024)
    pop3_auth_form: Pop3AuthForm = Pop3AuthForm.TWO_STEP

    @model_validator(mode="after")
    def _enough_to_get_a_token(self) -> OAuth2Auth:
        if self.refresh_token is None:
            if self.provider is OAuth2Provider.GOOGLE:
                raise ValueError("a google account needs refresh_token (Gmail has no app-only grant)")
            if self.client_secret is None:
                raise ValueError("the client-credentials grant needs client_secret (or give refresh_token)")
        elif self.provider is OAuth2Provider.GOOGLE and self.client_secret is None:
            raise ValueError("a google account needs client_secret")
        if self.provider is OAuth2Provider.MICROSOFT and self.token_url is None and not self.tenant_id:
            raise ValueError("a microsoft account needs tenant_id (or token_url)")
        if self.provider is OAuth2Provider.GENERIC and (self.token_url is None or self.scope is None):
            raise ValueError("a generic provider needs token_url and scope")
        if self.token_url and self.token_url.startswith("http://"):
            host = self.token_url[len("http://") :].split("/", 1)[0].rsplit(":", 1)[0]
            if host not in ("127.0.0.1", "localhost"):
                raise ValueError("token_url must be https (plain http only on 127.0.0.1)")
        return self

    @property
    def grant_type(self) -> str:
        return "client_credentials" if self.refresh_token is None else "refresh_token"

    @property
    def effective_token_url(self) -> str:
        if self.token_url:
            return self.token_url
        if self.provider is OAuth2Provider.GOOGLE:
            return GOOGLE_TOKEN_URL
        return MICROSOFT_TOKEN_URL.format(tenant=self.tenant_id)

    @property
    def effective_scope(self) -> str:
        if self.scope:
            return self.scope
        if self.provider is OAuth2Provider.GOOGLE:
            return GOOGLE_SCOPE
        return MICROSOFT_SCOPE if self.refresh_token is None else MICROSOFT_DELEGATED_SCOPE


AccountAuth = Annotated[PasswordAuth | OAuth2Auth, Field(discriminator="mode")]


class MailAccount(BaseModel):
    """One mail account of a team, as its team secret holds it.

    `mail_from` may differ from `mail_username`: a shared mailbox sent through a real user's login.
    Without `auth` an account logs in with `mail_password`, as accounts always did.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    mail_from: str = Field(min_length=3)
    mail_username: LoginText = Field(min_length=1, max_length=320)
    mail_password: Password = SecretStr("")
    smtp: ServerEndpoint
    pop3: ServerEndpoint
    # Leaving mail on the server is the default: deleting is the one step that can lose mail.
    leave_on_server: bool = True
    timeout_seconds: float = Field(default=30.0, gt=0, le=300)
    auth: AccountAuth = Field(default_factory=PasswordAuth)
    max_connections: int | None = Field(default=None, ge=1, le=100)
    max_messages_per_minute: int | None = Field(default=None, ge=1, le=10_000)
    # How long a mail of this account keeps trying after temporary failures (default 48 h).
    retry_max_age_hours: float | None = Field(default=None, gt=0, le=120)

    @model_validator(mode="after")
    def _password_when_password_mode(self) -> MailAccount:
        if isinstance(self.auth, PasswordAuth) and "mail_password" not in self.model_fields_set:
            raise ValueError("mail_password is required unless auth.mode is oauth2")
        return self

    @property
    def oauth2(self) -> OAuth2Auth | None:
        return self.auth if isinstance(self.auth, OAuth2Auth) else None

    @property
    def is_microsoft_oauth2(self) -> bool:
        return self.oauth2 is not None and self.oauth2.provider is OAuth2Provider.MICROSOFT

    @property
    def connection_limit(self) -> int | None:
        """Concurrent SMTP connections allowed (None: no limit)."""
        if self.max_connections is not None:
            return self.max_connections
        return MICROSOFT_MAX_CONNECTIONS if self.is_microsoft_oauth2 else None

    @property
    def message_rate_limit(self) -> int | None:
        """Messages a minute allowed (None: no limit)."""
        if self.max_messages_per_minute is not None:
            return self.max_messages_per_minute
        return MICROSOFT_MAX_MESSAGES_PER_MINUTE if self.is_microsoft_oauth2 else None

    @field_validator("mail_from")
    @classmethod
    def _one_address(cls, value: str) -> str:
        addresses = parse_addresses(value)
        if len(addresses) != 1:
            raise ValueError("mail_from must be exactly one address")
        return addresses[0]

    @property
    def smtp_login(self) -> str:
        return self.smtp.username or self.mail_username

    @property
    def pop3_login(self) -> str:
        return self.pop3.username or self.mail_username


class TeamConfig(BaseModel):
    """The JSON of one team secret. Only teams of type `mail` have accounts."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: str
    accounts: dict[Annotated[str, Field(pattern=NAME_PATTERN)], MailAccount] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _accounts_only_for_mail_teams(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("type") != "mail":
            return {**data, "accounts": {}}
        return data

    @property
    def is_mail(self) -> bool:
        return self.type == "mail"


# What the email package refuses in a header value: every character str.splitlines() breaks a
# line at (CR, LF, VT, FF, FS, GS, RS, NEL, U+2028, U+2029), NUL and the other C0 controls but
# TAB, DEL, and lone surrogates (they cannot be encoded). Checked here so a violation is a 400
# naming the field, never a ValueError from the MIME builder later.
_HEADER_UNSAFE = re.compile("[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029\ud800-\udfff]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_DOMAIN_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
MAX_ADDRESSES = 100


def reject_header_unsafe(value: str) -> str:
    if found := _HEADER_UNSAFE.search(value):
        raise ValueError(f"must not contain the control or line-break character U+{ord(found.group()):04X}")
    return value


def header_safe(value: str) -> str:
    """`value` with every character a header may not hold replaced by a space (for header text
    taken from stored data, such as a received mail's subject or a received file's name)."""
    return _HEADER_UNSAFE.sub(" ", value)


def reject_surrogates(value: str) -> str:
    if _SURROGATE.search(value):
        raise ValueError("must not contain lone surrogates (text that is not Unicode)")
    return value


def ascii_domain(domain: str) -> str:
    """The domain as SMTP and the header need it: IDNA (punycode) for a non-ASCII one; raises
    ValueError saying what is wrong (an empty label, a trailing dot, a label not a host name)."""
    if not domain or domain.startswith(".") or domain.endswith(".") or ".." in domain:
        raise ValueError(
            f"the domain {domain[:100]!r} has an empty label (a leading, trailing or double dot)"
        )
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError(
                f"the domain {domain[:100]!r} is not a valid internationalised domain name"
            ) from None
    labels = domain.split(".")
    if len(domain) > 253 or len(labels) < 2 or not all(_DOMAIN_LABEL.match(label) for label in labels):
        raise ValueError(f"the domain {domain[:100]!r} is not a host name")
    return domain


def _checked_address(name: str, addr: str, item: str) -> str:
    reject_header_unsafe(name)
    local, at, domain = addr.rpartition("@")
    if not at or not local or not domain or " " in addr or len(local) > 64:
        raise ValueError(f"not a valid mail address: {item.strip()[:100]!r}")
    if not local.isascii():
        # Such a local part needs SMTPUTF8 end to end; the service sends plain SMTP only.
        raise ValueError(
            f"the local part of {addr[:100]!r} is not ASCII: it needs SMTPUTF8, which this service does not use"
        )
    address = Address(display_name=name, addr_spec=f"{local}@{ascii_domain(domain)}")
    return str(address)


def parse_addresses(value: str | list[str]) -> list[str]:
    """Parses a comma separated string or a list of addresses into normalised `Name <addr>` strings
    with ASCII (IDNA) domains, each one the MIME builder and smtplib can use.

    Raises ValueError naming what is wrong, which pydantic reports against the field.
    """
    items = [value] if isinstance(value, str) else list(value)
    addresses: list[str] = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError("addresses must be strings")
        reject_header_unsafe(item)
        if not item.strip():
            continue
        try:
            for name, addr in getaddresses([item], strict=True):
                addresses.append(_checked_address(name, addr, item))
        except (HeaderParseError, IndexError, TypeError):
            # The email package's parser raises these (not ValueError) for a malformed address.
            raise ValueError(f"not a valid mail address: {item.strip()[:100]!r}") from None
        if len(addresses) > MAX_ADDRESSES:
            raise ValueError(f"at most {MAX_ADDRESSES} addresses")
    return addresses


def _address_list(value: Any) -> Any:
    if value is None:
        return []
    if isinstance(value, str | list):
        return parse_addresses(value)
    return value


def _id_list(value: Any) -> Any:
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list):
        return value
    ids = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError("file ids must be strings")
        item = item.strip()
        if not item:
            continue
        if not _ID.match(item):
            raise ValueError(f"not a file id: {item[:70]!r}")
        ids.append(item)
    return ids


_ADDRESS_TEXT = {
    "type": "string",
    "maxLength": 20_000,
    "examples": ["Ann Lee <ann@example.com>, bob@example.com"],
}
AddressList = Annotated[
    list[str],
    BeforeValidator(_address_list),
    WithJsonSchema(
        {
            "description": "addresses (`Name <addr@domain>` or `addr@domain`; a non-ASCII domain is sent as "
            f"IDNA, a non-ASCII local part is refused): a list, or one comma separated string; at most {MAX_ADDRESSES}",
            "anyOf": [_ADDRESS_TEXT, {"type": "array", "items": _ADDRESS_TEXT, "maxItems": MAX_ADDRESSES}],
        }
    ),
]
_FILE_ID = {"type": "string", "pattern": ID_PATTERN}
FileIdList = Annotated[
    list[str],
    BeforeValidator(_id_list),
    WithJsonSchema(
        {
            "description": "ids of files of the team (POST /api/core/files): a list, or one comma separated string",
            "anyOf": [
                {"type": "string", "maxLength": 6500},
                {"type": "array", "items": _FILE_ID, "maxItems": 100},
            ],
        }
    ),
]
HeaderText = Annotated[str, BeforeValidator(lambda v: reject_header_unsafe(v) if isinstance(v, str) else v)]
BodyText = Annotated[str, BeforeValidator(lambda v: reject_surrogates(v) if isinstance(v, str) else v)]


_SENDABLE: dict[str, Any] = {
    # What `missing()` asks of a mail to send: a recipient and a body.
    "allOf": [
        {"anyOf": [{"required": ["to"]}, {"required": ["cc"]}, {"required": ["bcc"]}]},
        {"anyOf": [{"required": ["body_text"]}, {"required": ["body_html"]}]},
    ],
}


def _schema_extra(schema: dict[str, Any], **extra: Any) -> Any:
    """JSON Schema keywords added to a model's schema (pydantic types the value narrowly)."""
    return {**schema, **extra}


_SEND_EXAMPLE: dict[str, Any] = {
    "to": ["Ann Lee <ann@example.com>"],
    "subject": "Your invoice",
    "body_text": "Hello Ann, the invoice is attached.",
    "body_html": "<p>Hello Ann, the invoice is attached.</p>",
}


class SendRequest(BaseModel):
    """What a caller asks to send. Lists may also be given as comma separated strings."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra=_schema_extra(_SENDABLE, examples=[_SEND_EXAMPLE])
    )

    to: AddressList = Field(default_factory=list)
    cc: AddressList = Field(default_factory=list)
    bcc: AddressList = Field(default_factory=list)
    reply_to: AddressList = Field(default_factory=list)
    subject: HeaderText = Field(default="", max_length=998)
    body_text: BodyText | None = None
    body_html: BodyText | None = None
    attachments: FileIdList = Field(default_factory=list, max_length=100)
    # The id of a stored mail of the same team this one answers: sets In-Reply-To, References, "Re:".
    reply_to_mail: str | None = Field(default=None, pattern=ID_PATTERN)

    def missing(self) -> tuple[str, str] | None:
        """(field, message) of what a sendable mail still lacks, or None."""
        if not (self.to or self.cc or self.bcc):
            return "to", "at least one recipient (to, cc or bcc) is required"
        if self.body_text is None and self.body_html is None:
            return "body_text", "body_text or body_html is required"
        return None

    def recipients(self) -> list[str]:
        """The envelope recipients: every address of to, cc and bcc, once each."""
        addresses = [address for _, address in getaddresses([*self.to, *self.cc, *self.bcc])]
        return [address for address in dict.fromkeys(addresses) if address]


class QueueRequest(SendRequest):
    """A mail to put in the outbox of `account` (of `team`, when two of the caller's have one)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=_schema_extra(_SENDABLE, examples=[{"account": "demo", **_SEND_EXAMPLE}]),
    )

    account: str = Field(pattern=NAME_PATTERN)
    team: str | None = Field(default=None, max_length=128)
    # When to send (ISO 8601; without an offset, UTC): in the past means now, at most
    # SEND_AT_LIMIT_DAYS ahead (docs/delivery.md).
    send_at: datetime | None = None
    # How long the mail keeps trying after temporary failures, in place of the account's limit.
    retry_max_age_hours: float | None = Field(default=None, gt=0, le=120)

    def send_request(self) -> SendRequest:
        return SendRequest.model_validate(
            self.model_dump(exclude={"account", "team", "send_at", "retry_max_age_hours"})
        )


class FileUpload(BaseModel):
    """A file to store: its bytes as base64 `content`, or only its `size` to get an upload URL."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [{"required": ["content"]}, {"required": ["size"]}],
            "examples": [
                {"name": "invoice.pdf", "content_type": "application/pdf", "content": "JVBERi0xLjcK"},
                {"name": "video.mp4", "content_type": "video/mp4", "size": 25_000_000},
            ],
        },
    )

    name: HeaderText = Field(min_length=1, max_length=255)
    content_type: str = Field(
        # RFC 6838 names, ASCII: the type becomes S3's Content-Type header and the MIME part's.
        default="application/octet-stream",
        pattern=r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$",
        max_length=255,
    )
    content: str | None = Field(
        default=None,
        max_length=10_000_000,
        pattern=r"^[A-Za-z0-9+/]*={0,2}$",
        description="the file's bytes, base64 (at most 7 MB decoded)",
    )
    size: int | None = Field(default=None, ge=0, le=40 * 1024 * 1024, description="for an upload URL instead")
    team: str | None = Field(default=None, max_length=128)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        name = value.replace("\\", "/").rsplit("/", 1)[-1].strip()
        if not name or name in {".", ".."}:
            raise ValueError("not a file name")
        return name


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class MailStatus(StrEnum):
    RECEIVED = "received"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    # The connection dropped after the whole message went out, before the server's answer: it may
    # or may not have been delivered, so a person decides (see the README's outbox section).
    UNKNOWN = "unknown"
    # A temporary failure (4xx, no connection): tried again at `next_attempt_at` (services/retry.py).
    DEFERRED = "deferred"
    CANCELLED = "cancelled"
    # Sent, and then every recipient's server reported it undeliverable (mailcore/bounces.py).
    BOUNCED = "bounced"


class Mail(BaseModel):
    """One stored mail, in or out. `raw_key` names the raw RFC 5322 object in the bucket."""

    model_config = ConfigDict(populate_by_name=True)

    id: str
    team: str
    account: str
    direction: Direction
    status: MailStatus
    from_: str = Field(default="", alias="from")
    to: list[str] = Field(default_factory=list)
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    reply_to: list[str] = Field(default_factory=list)
    subject: str = ""
    date: datetime | None = None
    message_id: str | None = None
    in_reply_to: str | None = None
    references: list[str] = Field(default_factory=list)
    body_text: str = ""
    body_html: str = ""
    attachments: list[str] = Field(default_factory=list)
    created_at: datetime
    error: str | None = None
    # Recipients the SMTP server refused while it accepted the others: address -> its reply.
    refused: dict[str, str] = Field(default_factory=dict)
    # Outgoing: the server's last answer to the message, and how many times sending was tried.
    reply: str | None = None
    attempts: int = 0
    # Every try of an outgoing mail: time, outcome, the server's reply, the recipients tried.
    attempt_log: list[dict[str, Any]] = Field(default_factory=list)
    # Scheduled sending, and the retry schedule after temporary failures (services/retry.py).
    send_at: datetime | None = None
    next_attempt_at: datetime | None = None
    retry_until: datetime | None = None
    deferrals: int = 0
    # Set by the outbox run holding the mail just before its SMTP attempt, removed with the
    # outcome: a run that takes over a claim finding it set knows the message may be out.
    attempt_started_at: datetime | None = None
    # Outgoing and `sending`: when the hold of the sender (an outbox run's lease, or a direct
    # send's function deadline and a margin) ends; after it the outbox's sync takes the mail over.
    lease_until: datetime | None = None
    # Outgoing, sent with an Idempotency-Key: the hash of that request (never secret: the body's
    # hash), so the same key with another request is refused after the first run died.
    request_digest: str | None = None
    # Outgoing: the recipients reported undeliverable (or delayed) by bounces; incoming bounce:
    # what it reports, and `bounce_of` the outgoing mail it reports on (mailcore/bounces.py).
    bounces: list[dict[str, Any]] = Field(default_factory=list)
    bounce_of: str | None = None
    # Incoming: sent by a machine (auto-reply, out-of-office, bounce, bulk): do not answer it.
    auto_reply: bool = False
    uidl: str | None = None
    raw_key: str | None = None
    raw_size: int | None = None
    parse_error: str | None = None
    # Received: what the item leaves out of the raw message (docs/received-mail-limits.md).
    cut: list[str] = Field(default_factory=list)

    @field_serializer("lease_until", when_used="json")
    def _guard_time(self, moment: datetime | None) -> str | None:
        # Stored as the outbox's guards compare it (storage.iso_time): ISO 8601 with +00:00.
        return moment.astimezone(UTC).isoformat() if moment is not None else None

    def public(self) -> dict[str, Any]:
        """The mail as the API answers it: JSON types, no storage internals."""
        return self.model_dump(mode="json", by_alias=True, exclude={"raw_key", "request_digest"})


class StoredFile(BaseModel):
    """A file of a team: an attachment sent or received, or an upload for a later send."""

    id: str
    team: str
    name: str
    content_type: str
    size: int
    s3_key: str
    created_at: datetime
    content_id: str | None = None
    mail_id: str | None = None
    uploaded: bool = True

    def public(self, url: str | None) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "content_type": self.content_type,
            "size": self.size,
            "url": url,
        }


class AccountPullReport(BaseModel):
    team: str
    account: str
    fetched: int = 0
    skipped: int = 0
    deleted: int = 0
    remaining: int = 0
    mail_ids: list[str] = Field(default_factory=list)
    # Messages stored raw with a small item, unparsed: over the per-message budget, or refused by
    # storage (each has a parse_error saying why; see docs/received-mail-limits.md).
    set_aside: int = 0
    error: str | None = None
    # Things that went through but need a person's attention (e.g. Gmail rewrote From).
    warnings: list[str] = Field(default_factory=list)
    # The diagnosis word of a server failure (protocols/diagnose.py): auth_failed, wrong_port, ...
    problem: str | None = None
