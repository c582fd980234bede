"""What every HTTP function shares: the resolver, its one error mapping, the caller, debug output."""

from __future__ import annotations

import binascii
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEvent

from mailcore.errors import MailServerError, MailServiceError, NotAuthenticated
from mailcore.models import NAME_PATTERN
from mailcore.protocols.diagnose import diagnosis
from mailcore.protocols.transcript import Transcript
from mailcore.teams import Caller, ResolvedAccount, TeamDirectory, caller_from_claims

logger = Logger(child=True)


def json_response(status: int, body: dict[str, Any]) -> Response[str]:
    return Response(status_code=status, content_type="application/json", body=json.dumps(body, default=str))


def error_body(code: str, message: str, field: str | None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field}}


def service_error_body(error: MailServiceError) -> dict[str, Any]:
    """The answer's body for a domain error: the error, the stored mail it concerns, and with
    ?debug=true the transcript and diagnosis."""
    body = error_body(error.code, error.message, error.field)
    mail = getattr(error, "mail", None)
    if mail is not None:
        body["mail"] = mail.public()
    if error.debug is not None:
        body["debug"] = error.debug
        if isinstance(error, MailServerError):
            body["diagnosis"] = diagnosis(error)
    return body


def _field_of(location: Any) -> str | None:
    # Powertools prefixes the place the value came from: ("body", "to", 0), ("query", "debug").
    parts = [str(part) for part in location[1:] if not isinstance(part, int)]
    return ".".join(parts) or (str(location[0]) if location else None)


class _ApiEvent(APIGatewayProxyEvent):
    """A REST event whose body, when it is not UTF-8, fails the way a body that is not JSON does
    (Powertools then answers the validation error) instead of raising UnicodeDecodeError."""

    @property
    def headers(self) -> dict[str, str]:
        # Powertools would parse a form or multipart body itself (and raise ValueError on a
        # multipart type without a boundary); the API takes JSON only, so every other type is
        # handed on as one Powertools refuses (415).
        headers = super().headers
        content_type = headers.get("content-type")
        if content_type and not content_type.strip().lower().startswith("application/json"):
            headers["content-type"] = "unsupported/" + content_type.strip()
        return headers

    @cached_property
    def decoded_body(self) -> str | None:
        try:
            return APIGatewayProxyEvent.decoded_body.func(self)  # type: ignore[attr-defined]
        except (UnicodeDecodeError, binascii.Error):
            raise json.JSONDecodeError("the body is not UTF-8 text", "", 0) from None


# No request of this API has an object with more members; pydantic reports each unknown one as an
# error of its own (300,000 members took 4 s, 240 MB and a 21 MB answer, over Lambda's 6 MB: 502).
MAX_OBJECT_MEMBERS = 1000
# The answer lists this many problems at most (the first one is its message and field).
MAX_ERROR_DETAILS = 20


class _TooManyMembers(Exception):
    pass


def _bounded_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len(pairs) > MAX_OBJECT_MEMBERS:
        raise _TooManyMembers
    return dict(pairs)


def parse_json_body(text: str) -> Any:
    """json.loads, with a body nested too deeply for the parser, or with an object of more than
    MAX_OBJECT_MEMBERS members, refused like any invalid JSON."""
    try:
        return json.loads(text, object_pairs_hook=_bounded_object)
    except RecursionError:
        raise json.JSONDecodeError("the body is nested too deeply", "", 0) from None
    except _TooManyMembers:
        message = f"an object of the body has more than {MAX_OBJECT_MEMBERS} members"
        raise json.JSONDecodeError(message, "", 0) from None


class MailApiResolver(APIGatewayRestResolver):
    def _to_proxy_event(self, event: dict[str, Any]) -> APIGatewayProxyEvent:
        return _ApiEvent(event, parse_json_body)


def make_resolver() -> APIGatewayRestResolver:
    """A REST resolver validating with pydantic, answering every error as JSON naming the field."""
    app = MailApiResolver(enable_validation=True)

    @app.exception_handler(RequestValidationError)
    def _invalid_request(error: RequestValidationError) -> Response[str]:
        details = error.errors()
        first = details[0] if details else {"loc": (), "msg": "invalid request"}
        field = _field_of(first.get("loc", ()))
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        if first.get("type") == "json_invalid":
            context = first.get("ctx")
            reason = context.get("error") if isinstance(context, dict) else None
            field, message = "body", "the body is not valid JSON" + (f" ({reason})" if reason else "")
        body = error_body("invalid_input", message, field)
        body["error"]["details"] = [
            {"field": _field_of(detail.get("loc", ())), "message": str(detail.get("msg", ""))}
            for detail in details[:MAX_ERROR_DETAILS]
        ]
        return json_response(400, body)

    @app.exception_handler(RequestUnsupportedContentType)
    def _unsupported_type(_: RequestUnsupportedContentType) -> Response[str]:
        return json_response(
            415, error_body("unsupported_media_type", "send the body as application/json", "Content-Type")
        )

    @app.exception_handler(MailServiceError)
    def _service_error(error: MailServiceError) -> Response[str]:
        if error.status >= 500:
            logger.warning("request failed", extra={"code": error.code, "reason": error.message})
        return json_response(error.status, service_error_body(error))

    @app.exception_handler(Exception)
    def _unexpected(error: Exception) -> Response[str]:
        # The details go to the log only; the caller gets an id to quote, never a stack trace.
        logger.exception("unexpected failure")
        request_id = app.current_event.request_context.request_id
        message = f"the service failed unexpectedly; try again later (request id {request_id})"
        return json_response(500, error_body("internal_error", message, None))

    return app


def current_caller(app: APIGatewayRestResolver, directory: TeamDirectory) -> Caller:
    """The caller and its mail teams (only groups that have a mail team secret)."""
    event = app.current_event
    authorization = event.headers.get("Authorization") or event.headers.get("authorization")
    caller = caller_from_claims(event.request_context.authorizer.claims, authorization)
    if caller is None:
        raise NotAuthenticated("a valid token is required")
    return directory.member_teams(caller)


# The parameters of every route that names one of the caller's accounts.
AccountName = Annotated[str, Path(pattern=NAME_PATTERN, description="the account's name in its team secret")]
Team = Annotated[
    str | None, Query(max_length=128, description="the team, when two of yours have this account")
]


def callers_account(
    app: APIGatewayRestResolver, directory: TeamDirectory, account: str, team: str | None
) -> ResolvedAccount:
    """The caller's account of that name (in `team` when two of the caller's teams have one)."""
    return directory.resolve_account(current_caller(app, directory), account, team)


# API Gateway (REST) gives up on an integration after 29 s; work for an HTTP caller must stop
# in time to answer, however long the function itself may run.
API_INTEGRATION_SECONDS = 29.0


def seconds_left_for_caller(app: APIGatewayRestResolver) -> float:
    """What is left of the time in which the caller can still get an answer."""
    left = app.lambda_context.get_remaining_time_in_millis() / 1000
    received_ms = app.current_event.request_context.get("requestTimeEpoch")
    if received_ms:
        left = min(left, received_ms / 1000 + API_INTEGRATION_SECONDS - time.time())
    return left


@contextmanager
def debug_transcript(debug: bool) -> Iterator[Transcript]:
    """A transcript for one request; on a failure it goes into the error answer when asked for."""
    transcript = Transcript()
    try:
        yield transcript
    except MailServiceError as error:
        if debug:
            error.debug = transcript.lines
        raise
