"""Outgoing mail through the API: send one now, queue one, sync an account's outbox. Push (the
MailTable stream) and the scheduled sync have their own functions (outbox_push, outbox_sync)."""

import hashlib
import json
from datetime import timedelta
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
    IdempotencyValidationError,
)
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore.answers import READ_MAIL, MailAnswer, RetryAnswer, SyncAnswer, responses
from mailcore.api import (
    AccountName,
    Team,
    callers_account,
    current_caller,
    debug_transcript,
    error_body,
    json_response,
    make_resolver,
    seconds_left_for_caller,
    service_error_body,
)
from mailcore.models import ID_PATTERN, QueueRequest, SendRequest
from mailcore.services.send import KEY_WINDOW, KeyReused, MailSendFailed, RequestKey
from mailcore.teams import ResolvedAccount
from mailcore.telemetry import log_metrics
from mailcore.wiring import send as wiring

logger = Logger()
# The init reads and checks the settings (a missing variable fails it, by name); clients come on first use.
wiring.root()
app = make_resolver()

IDEMPOTENCY_WINDOW_SECONDS = int(KEY_WINDOW.total_seconds())
# Records are keyed on this, not on the module and function (Powertools' default): every execution
# environment, and every version of this file, must find the records the others wrote.
IDEMPOTENCY_PREFIX = "send"
MAY_ARRIVE_TWICE = (
    "the first attempt may have been delivered (its connection dropped after the message"
    " was sent): the recipient may get this mail twice, with the same Message-ID"
)
MailId = Annotated[str, Path(pattern=ID_PATTERN, description="the outgoing mail's id")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        description=(
            "the same key within 24 h answers the first send's outcome instead of sending again;"
            " when the first send was interrupted, a 409 (earlier_attempt) with its mail: never sent twice"
        ),
    ),
]


@app.exception_handler(IdempotencyValidationError)
def _key_reused(_: IdempotencyValidationError) -> Response[str]:
    return json_response(422, service_error_body(KeyReused()))


@app.exception_handler(IdempotencyAlreadyInProgressError)
def _key_in_progress(_: IdempotencyAlreadyInProgressError) -> Response[str]:
    message = "a request with this Idempotency-Key is still being sent; ask again in a moment"
    return json_response(409, error_body("idempotency_key_in_progress", message, "Idempotency-Key"))


def _send(*, request: dict[str, Any], target: ResolvedAccount, debug: bool) -> dict[str, Any]:
    """The answer (status and body) to a send; a failed send is an answer too, so a replayed
    Idempotency-Key gets it back instead of sending again. A keyed request's mail has an id derived
    from the key: a run after one that died answers that mail (services/send.py, earlier_answer)."""
    once = RequestKey(request["caller"], request["key"], request["digest"]) if "key" in request else None
    with debug_transcript(debug) as transcript:
        try:
            mail = wiring.root().send_now(
                target,
                SendRequest.model_validate(request["body"]),
                transcript,
                time_left=app.lambda_context.get_remaining_time_in_millis() / 1000,
                seconds_left=lambda: seconds_left_for_caller(app),
                once=once,
            )
        except MailSendFailed as failure:  # MailDeferred too: 202, the outbox tries it again
            if debug:
                failure.debug = transcript.lines
            return {"status": failure.status, "body": service_error_body(failure)}
    return {"status": 200, "body": {"mail": mail.public(), **({"debug": transcript.lines} if debug else {})}}


@app.post(
    "/api/core/mail/send/<account>",
    summary="Send one mail with a team's account",
    responses=responses(
        200, MailAnswer, "The mail is sent", 202, 403, 404, 409, 413, 415, 422, 429, 502, links=READ_MAIL
    ),
)
def send(
    account: AccountName,
    request: Annotated[SendRequest, Body()],
    team: Team = None,
    debug: Annotated[bool, Query(description="add the SMTP conversation (credentials redacted)")] = False,
    key: IdempotencyKey = None,
) -> Response[str]:
    root = wiring.root()
    caller = current_caller(app, root.directory)
    target = root.directory.resolve_account(caller, account, team)
    body = request.model_dump(mode="json")
    if key:
        answer = _send_once(key=key, caller=caller.user, target=target, body=body, debug=debug)
    else:
        answer = _send(request={"body": body}, target=target, debug=debug)
    return json_response(answer["status"], answer["body"])


def _send_once(
    *, key: str, caller: str, target: ResolvedAccount, body: dict[str, Any], debug: bool
) -> dict[str, Any]:
    """`_send` under Powertools idempotency, keyed on the header, the caller and the account; the
    body's hash is checked, so the same key with another body is refused rather than answered with
    the first mail."""
    digest = hashlib.sha256(json.dumps([body, debug], sort_keys=True).encode()).hexdigest()
    config = IdempotencyConfig(
        event_key_jmespath="[key, caller, team, account]",
        payload_validation_jmespath="digest",
        expires_after_seconds=IDEMPOTENCY_WINDOW_SECONDS,
    )
    config.register_lambda_context(app.lambda_context)
    once = idempotent_function(
        _send,
        data_keyword_argument="request",
        persistence_store=wiring.root().idempotency_store(),
        config=config,
        key_prefix=IDEMPOTENCY_PREFIX,
    )
    request = {
        "key": key,
        "caller": caller,
        "team": target.team,
        "account": target.name,
        "digest": digest,
        "body": body,
    }
    return once(request=request, target=target, debug=debug)


@app.post(
    "/api/core/mail",
    summary="Queue a mail of an account; sent within seconds (push), or at send_at",
    responses=responses(202, MailAnswer, "The mail is queued", 403, 404, 409, 413, 415, links=READ_MAIL),
)
def queue(request: Annotated[QueueRequest, Body()]) -> Response[str]:
    root = wiring.root()
    target = callers_account(app, root.directory, request.account, request.team)
    max_age = request.retry_max_age_hours
    mail = root.queue(
        target,
        request.send_request(),
        send_at=request.send_at,
        retry_max_age=timedelta(hours=max_age) if max_age else None,
    )
    return json_response(202, {"mail": mail.public()})


@app.post(
    "/api/core/mail/<mail_id>/cancel",
    summary="Cancel a queued or deferred mail of your team (409 when it is in another status)",
    responses=responses(200, MailAnswer, "The mail is cancelled", 403, 404, 409, 415, links=READ_MAIL),
)
def cancel(mail_id: MailId) -> dict[str, Any]:
    root = wiring.root()
    return {"mail": root.cancel(current_caller(app, root.directory), mail_id).public()}


@app.post(
    "/api/core/mail/<mail_id>/retry",
    summary="Queue a failed or unknown mail of your team again, with the same Message-ID",
    responses=responses(202, RetryAnswer, "The mail is queued again", 403, 404, 409, 415, links=READ_MAIL),
)
def retry(mail_id: MailId) -> Response[str]:
    root = wiring.root()
    retried = root.retry(current_caller(app, root.directory), mail_id)
    body: dict[str, Any] = {"mail": retried.mail.public()}
    if retried.first_may_be_delivered:
        body["warning"] = MAY_ARRIVE_TWICE
    return json_response(202, body)


@app.post(
    "/api/core/mail/sync/<account>",
    summary="Send everything still queued for an account",
    responses=responses(200, SyncAnswer, "What was sent, failed, deferred or left", 403, 404, 409),
)
def sync(account: AccountName, team: Team = None) -> dict[str, Any]:
    root = wiring.root()
    target = callers_account(app, root.directory, account, team)
    return root.sync(target, seconds_left=lambda: seconds_left_for_caller(app)).public()


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
