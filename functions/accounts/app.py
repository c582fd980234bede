"""A team's mail accounts: list, read, create or change, delete, check (GET/PUT/DELETE
/api/core/mail/accounts[/{account}], POST .../{account}/check). See docs/accounts.md."""

from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore.answers import AccountAnswer, AccountCheckAnswer, AccountsAnswer, responses
from mailcore.api import AccountName, Team, current_caller, json_response, make_resolver, service_error_body
from mailcore.errors import InvalidInput
from mailcore.services.accounts import CheckFailed
from mailcore.teams import Caller
from mailcore.telemetry import log_metrics
from mailcore.wiring import accounts as wiring

logger = Logger()
# The init reads and checks the settings (a missing variable fails it, by name); clients come on first use.
wiring.root()
app = make_resolver()

ACCOUNT_BODY = (
    "The account as the team secret holds it (mail_from, mail_username, mail_password, smtp, pop3, auth, ...). "
    "A secret value left out (mail_password, auth.client_secret, auth.refresh_token) keeps its stored value."
)


# What the accounts routes answer beyond the other routes' errors (mailcore.answers).
WHY = {
    403: "Not a member of the team (not_a_member), or, to change it, not in <team>-admin (not_an_administrator)",
    404: "No such account in your teams (account_not_found)",
    409: "Two of your teams have this account (name one with ?team=), or another change of the team is being saved",
    412: "If-Match names an older revision of the account (revision_mismatch)",
    422: "?check=true and the check failed (check_failed): nothing was saved; the result is under `check`",
}
READ_ERRORS = (403, 404, 409)


def _caller() -> Caller:
    return current_caller(app, wiring.root().directory)


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
    responses=responses(200, AccountsAnswer, "The accounts", 403, why=WHY),
)
def list_accounts(
    team: Annotated[str | None, Query(max_length=128, description="only this team")] = None,
) -> dict[str, Any]:
    return {"accounts": wiring.root().accounts.list(_caller(), team)}


@app.get(
    "/api/core/mail/accounts/<account>",
    summary="One mail account (no secret values) and its health",
    responses=responses(200, AccountAnswer, "The account", *READ_ERRORS, why=WHY),
)
def get_account(account: AccountName, team: Team = None) -> dict[str, Any]:
    return {"account": wiring.root().accounts.get(_caller(), account, team)}


@app.put(
    "/api/core/mail/accounts/<account>",
    summary="Create or change a mail account (team administrators)",
    responses={
        **responses(200, AccountAnswer, "The account was changed", *READ_ERRORS, 412, 422, why=WHY),
        **responses(201, AccountAnswer, "The account was created", why=WHY),
    },
)
def put_account(
    account: AccountName,
    change: Annotated[dict[str, Any], Body(description=ACCOUNT_BODY)],
    team: Team = None,
    check: Annotated[
        bool, Query(description="check the account first; refuse to save it if it fails")
    ] = False,
) -> Response[str]:
    view, created = wiring.root().accounts.save(
        _caller(), account, team, change, check=check, if_match=_if_match()
    )
    return json_response(201 if created else 200, {"account": view})


@app.delete(
    "/api/core/mail/accounts/<account>",
    summary="Delete a mail account (team administrators)",
    responses=responses(204, None, "The account was deleted", *READ_ERRORS, 412, why=WHY),
)
def delete_account(account: AccountName, team: Team = None) -> Response[str]:
    wiring.root().accounts.delete(_caller(), account, team, if_match=_if_match())
    return Response(status_code=204, content_type="application/json", body="")


@app.post(
    "/api/core/mail/accounts/<account>/check",
    summary="Check a saved account as `make check` does",
    responses=responses(200, AccountCheckAnswer, "The check's result", *READ_ERRORS, why=WHY),
)
def check_account(account: AccountName, team: Team = None) -> dict[str, Any]:
    return {"check": wiring.root().accounts.check_saved(_caller(), account, team)}


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
