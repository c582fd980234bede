"""The API's answer bodies as pydantic models: they exist for the OpenAPI document (every status
an operation answers, with its schema), so a client generated from it reads every answer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mailcore.models import AccountPullReport, Mail

APPLICATION_JSON = "application/json"


class ErrorDetail(BaseModel):
    field: str | None
    message: str


class ErrorInfo(BaseModel):
    code: str = Field(description="a stable word: invalid_input, not_a_member, mail_server_error, ...")
    message: str = Field(description="what went wrong, for a person")
    # API Gateway's own answers (template.yaml's GatewayResponses: 401, 413, 429, ...) have no field.
    field: str | None = Field(default=None, description="the request field (or header) at fault, when one is")
    details: list[ErrorDetail] | None = Field(default=None, description="every invalid field (400)")


class ErrorBody(BaseModel):
    """Every error answer of the service."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"error": {"code": "invalid_input", "message": "Field required", "field": "to"}}]
        }
    )

    error: ErrorInfo
    mail: dict[str, Any] | None = Field(default=None, description="the stored mail a failed send concerns")
    debug: list[str] | None = Field(default=None, description="the protocol conversation (?debug=true)")
    diagnosis: dict[str, Any] | None = Field(default=None, description="what the server's answer means")


class FileInfo(BaseModel):
    id: str
    name: str
    content_type: str
    size: int
    url: str | None = Field(description="a presigned download URL (GET /api/core/files/{file_id})")


class FileAnswer(BaseModel):
    file: FileInfo
    upload_url: str | None = Field(
        default=None,
        description="PUT the file's bytes here (with its Content-Type) when only its size was given",
    )


class MailAnswer(BaseModel):
    mail: Mail
    debug: list[str] | None = None


class RetryAnswer(BaseModel):
    mail: Mail
    warning: str | None = Field(
        default=None, description="set when the first attempt may have been delivered"
    )


class RawMail(BaseModel):
    url: str = Field(description="a presigned URL to download the raw RFC 5322 message (message/rfc822)")
    size: int | None = Field(description="its size in bytes")


class RawMailAnswer(BaseModel):
    raw: RawMail


class MailListAnswer(BaseModel):
    mail: list[dict[str, Any]] = Field(description="mail summaries (no bodies), newest first")
    cursor: str | None = Field(description="give it as ?cursor= for the next page; null on the last")


class PullAnswer(BaseModel):
    accounts: list[AccountPullReport]
    debug: list[str] | None = None
    diagnosis: list[dict[str, Any]] | None = None


class PullStatus(BaseModel):
    team: str
    account: str
    last_pull_at: str | None
    last_error: str | None
    fetched: int
    remaining: int
    running: bool
    broken_reason: str | None = None


class PullStatusAnswer(BaseModel):
    status: PullStatus


class OutboxMail(BaseModel):
    id: str
    status: str
    reply: str | None
    error: str | None
    refused: dict[str, str]
    attempts: int
    next_attempt_at: str | None = Field(default=None, description="when a deferred mail is tried again")


class SyncAnswer(BaseModel):
    sent: list[OutboxMail]
    failed: list[OutboxMail]
    unknown: list[OutboxMail]
    skipped: list[str] = Field(description="ids of mail another sender holds")
    errors: dict[str, str] = Field(description="mail id -> why its outcome could not be recorded")
    deferred: list[OutboxMail] = Field(description="mail a temporary failure left for a later attempt")
    released: list[str] = Field(description="ids left for the next sync (time or provider limits ran out)")


class AccountView(BaseModel):
    team: str
    account: str
    configuration: dict[str, Any] = Field(
        description="the account as the team secret holds it, no secret value"
    )
    secrets: dict[str, bool] = Field(description="which secret values are set (never the values)")
    revision: int = Field(description="give it as If-Match to change the account only from this copy")
    health: dict[str, Any] = Field(description="last pull, last send, last error and its diagnosis")


class AccountsAnswer(BaseModel):
    accounts: list[AccountView]


class AccountAnswer(BaseModel):
    account: AccountView


class AccountCheckAnswer(BaseModel):
    check: dict[str, Any] = Field(description="the check tool's result: ok, transcript, diagnosis")


_WHY = {
    202: "Not sent yet: a temporary failure (error.code mail_deferred); the outbox tries the mail again",
    400: "Invalid input: the error names the field (body, query, path or header)",
    401: "No valid token",
    403: "Not a member of the team that owns it",
    404: "No such item",
    409: "A conflict: ambiguous account (name ?team=), a pull or a keyed send already running",
    413: "The request body is larger than API Gateway takes (10 MB)",
    415: "The body is not application/json",
    422: "The Idempotency-Key was used for a different request, or the account's mail server is at an "
    "address the service may not connect to (address_not_allowed; the mail is stored failed)",
    429: "The account's provider limit (messages a minute, connections) is reached; try again later",
    500: "The service failed (or a team secret is invalid); the message has a request id",
    502: "The mail server failed or refused; the stored mail and the server's answer are included",
}


# Operation ids the links name (the routes set them).
GET_FILE = "getFile"
GET_MAIL = "getMail"
# What a client (and the fuzzer's stateful phase) can do next with an answer.
READ_FILE = {"file": {"operationId": GET_FILE, "parameters": {"file_id": "$response.body#/file/id"}}}
READ_MAIL = {"mail": {"operationId": GET_MAIL, "parameters": {"mail_id": "$response.body#/mail/id"}}}


def responses(
    status: int,
    model: type[BaseModel] | None,
    description: str,
    *errors: int,
    links: dict[str, Any] | None = None,
    why: dict[int, str] | None = None,
) -> dict[int, Any]:
    """The `responses=` of a route: its success answer (with `links` to what may follow; no body
    when `model` is None), and every error status it can answer (400, 401, 500 always; the route
    names the others) with the error body's schema, described as `why` says where it says."""
    success: dict[str, Any] = {"description": description}
    if model is not None:
        success["content"] = {APPLICATION_JSON: {"model": model}}
    if links:
        success["links"] = links
    answers: dict[int, Any] = {status: success}
    for code in sorted({400, 401, 500, *errors}):
        text = (why or {}).get(code) or _WHY[code]
        answers[code] = {"description": text, "content": {APPLICATION_JSON: {"model": ErrorBody}}}
    return answers
