"""Pull new mail over POP3: one account or all of the caller's (API), or every account (schedule)."""

from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore import runtime
from mailcore.api import current_caller, debug_transcript, make_resolver
from mailcore.protocols.transcript import Transcript
from mailcore.services.pull import pull_accounts

logger = Logger()
app = make_resolver()

Debug = Annotated[bool, Query(description="add the POP3 conversation (credentials redacted)")]


def _answer(reports: list[Any], transcript: Transcript, debug: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {"accounts": [report.model_dump() for report in reports]}
    if debug:
        answer["debug"] = transcript.lines
        answer["diagnosis"] = [
            {
                "team": report.team,
                "account": report.account,
                "problem": report.problem,
                "message": report.error,
            }
            for report in reports
            if report.error
        ]
    return answer


def _seconds_left() -> float:
    return app.lambda_context.get_remaining_time_in_millis() / 1000


@app.get("/api/core/mail/pull/<account>", summary="Pull new mail of one account")
@app.post("/api/core/mail/pull/<account>", summary="Pull new mail of one account")
def pull_one(
    account: str,
    team: Annotated[str | None, Query(description="the team, when two of yours have this account")] = None,
    debug: Debug = False,
) -> dict[str, Any]:
    target = runtime.directory().resolve_account(current_caller(app), account, team)
    with debug_transcript(debug) as transcript:
        reports = pull_accounts(
            [target],
            storage=runtime.storage(),
            transcript=transcript,
            tls_context=runtime.tls_context(),
            seconds_left=_seconds_left,
            tokens=runtime.tokens(),
        )
    return _answer(reports, transcript, debug)


@app.get("/api/core/mail/pull", summary="Pull new mail of every account of your mail teams")
@app.post("/api/core/mail/pull", summary="Pull new mail of every account of your mail teams")
def pull_mine(debug: Debug = False) -> dict[str, Any]:
    targets = runtime.directory().accounts_of(current_caller(app).teams)
    with debug_transcript(debug) as transcript:
        reports = pull_accounts(
            targets,
            storage=runtime.storage(),
            transcript=transcript,
            tls_context=runtime.tls_context(),
            seconds_left=_seconds_left,
            tokens=runtime.tokens(),
        )
    return _answer(reports, transcript, debug)


def scheduled_pull(context: LambdaContext) -> dict[str, Any]:
    directory = runtime.directory()
    reports = pull_accounts(
        directory.accounts_of(directory.all_teams()),
        storage=runtime.storage(),
        transcript=Transcript(),
        tls_context=runtime.tls_context(),
        seconds_left=lambda: context.get_remaining_time_in_millis() / 1000,
        tokens=runtime.tokens(),
    )
    for report in reports:
        if report.error:
            logger.warning(
                "pull failed", extra={"team": report.team, "account": report.account, "reason": report.error}
            )
    return {"accounts": [report.model_dump(exclude={"mail_ids"}) for report in reports]}


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "httpMethod" in event:
        return app.resolve(event, context)
    return scheduled_pull(context)
