"""A team's mail accounts: list, read, create or change, delete, check (GET/PUT/DELETE
/api/core/mail/accounts[/{account}], POST .../{account}/check). See docs/accounts.md."""

from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore import runtime
from mailcore.api import current_caller, json_response, make_resolver, service_error_body
from mailcore.errors import InvalidInput
from mailcore.models import NAME_PATTERN
from mailcore.services.accounts import CheckFailed

logger = Logger()
app = make_resolver()

AccountName = Annotated[str, Path(pattern=NAME_PATTERN)]
Team = Annotated[
    str | None, Query(max_length=128, description="the team, when two of yours have this account")
]
ACCOUNT_BODY = (
    "The account as the team secret holds it (mail_from, mail_username, mail_password, smtp, pop3, auth, ...). "
    "A secret value left out (mail_password, auth.client_secret, auth.refresh_token) keeps its stored value."
)


# Every error answers {"error": {"code", "message", "field"}} (mailcore.api).
ERROR = "an error body {error: {code, message, field}}: "
READ_ERRORS: dict[int, OpenAPIResponse] = {
    200: {"description": "the answer"},
    400: {"description": ERROR + "invalid input (the field names it)"},
    403: {"description": ERROR + "not a member of the team (not_a_member)"},
    404: {"description": ERROR + "no such account in your teams (account_not_found)"},
    409: {"description": ERROR + "two of your teams have this account: name one with ?team="},
}
WRITE_ERRORS: dict[int, OpenAPIResponse] = {
    **READ_ERRORS,
    403: {"description": ERROR + "not a member (not_a_member) or not in <team>-admin (not_an_administrator)"},
    409: {"description": ERROR + "ambiguous account, or another change of the team is being saved"},
    412: {"description": ERROR + "If-Match names an older revision (revision_mismatch)"},
    422: {
        "description": ERROR + "?check=true and the check failed (check_failed); the result is under `check`"
    },
}


@app.exception_handler(CheckFailed)
def _check_failed(error: CheckFailed) -> Response[str]:
    return json_response(error.status, {**service_error_body(error), "check": error.check})


def _if_match() -> int | None:
    """The revision the caller's copy of the account has (`If-Match: 3` or `"3"`), if given."""
    value = app.current_event.headers.get("If-Match") or app.current_event.headers.get("if-match")
    if value is None:
        return None
    text = value.strip().removeprefix("W/").strip('"')
    if not text.isdigit() or len(text) > 12:
        raise InvalidInput("If-Match must be the account's revision (a number)", field="If-Match")
    return int(text)


@app.get(
    "/api/core/mail/accounts",
    summary="The mail accounts of your teams, with their health",
    responses=READ_ERRORS,
)
def list_accounts(
    team: Annotated[str | None, Query(max_length=128, description="only this team")] = None,
) -> dict[str, Any]:
    return {"accounts": runtime.accounts().list(current_caller(app), team)}


@app.get(
    "/api/core/mail/accounts/<account>",
    summary="One mail account (no secret values) and its health",
    responses=READ_ERRORS,
)
def get_account(account: AccountName, team: Team = None) -> dict[str, Any]:
    return {"account": runtime.accounts().get(current_caller(app), account, team)}


@app.put(
    "/api/core/mail/accounts/<account>",
    summary="Create or change a mail account (team administrators)",
    responses={**WRITE_ERRORS, 201: {"description": "the account was created"}},
)
def put_account(
    account: AccountName,
    change: Annotated[dict[str, Any], Body(description=ACCOUNT_BODY)],
    team: Team = None,
    check: Annotated[
        bool, Query(description="check the account first; refuse to save it if it fails")
    ] = False,
) -> Response[str]:
    view, created = runtime.accounts().save(
        current_caller(app), account, team, change, check=check, if_match=_if_match()
    )
    return json_response(201 if created else 200, {"account": view})


@app.delete(
    "/api/core/mail/accounts/<account>",
    summary="Delete a mail account (team administrators)",
    responses={
        **{k: v for k, v in WRITE_ERRORS.items() if k not in (200, 422)},
        204: {"description": "deleted"},
    },
)
def delete_account(account: AccountName, team: Team = None) -> Response[str]:
    runtime.accounts().delete(current_caller(app), account, team, if_match=_if_match())
    return Response(status_code=204, content_type="application/json", body="")


@app.post(
    "/api/core/mail/accounts/<account>/check",
    summary="Check a saved account as `make check` does",
    responses=READ_ERRORS,
)
def check_account(account: AccountName, team: Team = None) -> dict[str, Any]:
    return {"check": runtime.accounts().check_saved(current_caller(app), account, team)}


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
