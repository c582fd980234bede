"""Pull new mail over POP3 through the API: one account or all of the caller's, and a pull's status.
The pull queue has its own function (functions/pull_queue)."""

from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore.answers import PullAnswer, PullStatusAnswer, responses
from mailcore.api import (
    AccountName,
    Team,
    callers_account,
    current_caller,
    debug_transcript,
    make_resolver,
    seconds_left_for_caller,
)
from mailcore.protocols.transcript import Transcript
from mailcore.telemetry import log_metrics
from mailcore.wiring import pull as wiring

logger = Logger()
# The init reads and checks the settings (a missing variable fails it, by name); clients come on first use.
wiring.root()
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
    return seconds_left_for_caller(app)


PULLED = responses(
    200, PullAnswer, "What the pull fetched (a server failure is reported here)", 403, 404, 409
)


@app.get("/api/core/mail/pull/<account>", summary="Pull new mail of one account", responses=PULLED)
@app.post("/api/core/mail/pull/<account>", summary="Pull new mail of one account", responses=PULLED)
def pull_one(account: AccountName, team: Team = None, debug: Debug = False) -> dict[str, Any]:
    root = wiring.root()
    target = callers_account(app, root.directory, account, team)
    with debug_transcript(debug) as transcript:
        report = root.pull(target, transcript=transcript, seconds_left=_seconds_left)
    return _answer([report], transcript, debug)


@app.get(
    "/api/core/mail/pull/<account>/status",
    summary="The latest pull of an account, and whether one runs",
    responses=responses(200, PullStatusAnswer, "The latest pull", 403, 404, 409),
)
def pull_one_status(account: AccountName, team: Team = None) -> dict[str, Any]:
    root = wiring.root()
    return {"status": root.status(current_caller(app, root.directory), account, team)}


@app.get("/api/core/mail/pull", summary="Pull new mail of every account of your mail teams", responses=PULLED)
@app.post(
    "/api/core/mail/pull", summary="Pull new mail of every account of your mail teams", responses=PULLED
)
def pull_mine(debug: Debug = False) -> dict[str, Any]:
    root = wiring.root()
    caller = current_caller(app, root.directory)
    with debug_transcript(debug) as transcript:
        reports = root.pull_mine(caller, transcript=transcript, seconds_left=_seconds_left)
    return _answer(reports, transcript, debug)


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
