"""Files of a team and stored mail: POST /api/core/files, GET /api/core/files/{id}, GET /api/core/mail[/{id}]."""

from datetime import datetime
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.openapi.params import Body, Path, Query
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore.answers import (
    GET_FILE,
    GET_MAIL,
    READ_FILE,
    FileAnswer,
    MailAnswer,
    MailListAnswer,
    RawMailAnswer,
    responses,
)
from mailcore.api import current_caller, json_response, make_resolver
from mailcore.models import ID_PATTERN, Direction, FileUpload, MailStatus
from mailcore.services.files import parse_again, store_file, team_file, team_mail, team_raw_mail
from mailcore.services.mail_list import DEFAULT_LIMIT, MAX_LIMIT, list_mail, mail_query
from mailcore.teams import Caller
from mailcore.telemetry import log_metrics
from mailcore.wiring import store as wiring

logger = Logger()
# The init reads and checks the settings (a missing variable fails it, by name); clients come on first use.
wiring.root()
app = make_resolver()
StoredId = Annotated[str, Path(pattern=ID_PATTERN)]


def _caller() -> Caller:
    return current_caller(app, wiring.root().directory)


@app.post(
    "/api/core/files",
    summary="Store a file of a team (base64 content, or an upload URL)",
    responses=responses(
        201,
        FileAnswer,
        "The file is stored, or registered with an upload URL",
        403,
        413,
        415,
        links=READ_FILE,
    ),
)
def upload_file(upload: Annotated[FileUpload, Body()]) -> Response[str]:
    stored, upload_url = store_file(
        _caller(),
        team=upload.team,
        name=upload.name,
        content_type=upload.content_type,
        content=upload.content,
        size=upload.size,
        storage=wiring.root().storage,
    )
    answer: dict[str, Any] = {"file": stored.public(None)}
    if upload_url:
        answer["upload_url"] = upload_url
    return json_response(201, answer)


@app.get(
    "/api/core/files/<file_id>",
    summary="A file's metadata and a presigned download URL",
    operation_id=GET_FILE,
    responses=responses(200, FileAnswer, "The file", 403, 404),
)
def get_file(file_id: StoredId) -> dict[str, Any]:
    stored, url = team_file(_caller(), file_id, wiring.root().storage)
    return {"file": stored.public(url)}


@app.get(
    "/api/core/mail",
    summary="Your teams' mail, newest first (summaries; cursor pagination)",
    responses=responses(200, MailListAnswer, "A page of mail summaries", 403),
)
def list_team_mail(
    team: Annotated[str | None, Query(description="only this team's mail")] = None,
    account: Annotated[str | None, Query(max_length=64)] = None,
    direction: Annotated[Direction | None, Query()] = None,
    status: Annotated[MailStatus | None, Query()] = None,
    since: Annotated[
        datetime | None, Query(description="ISO date or time: mail created at or after it")
    ] = None,
    cursor: Annotated[
        str | None, Query(max_length=4096, description="the cursor of the previous page")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> dict[str, Any]:
    query = mail_query(account=account, direction=direction, status=status, since=since)
    return list_mail(
        _caller(), storage=wiring.root().storage, team=team, query=query, cursor=cursor, limit=limit
    )


@app.get(
    "/api/core/mail/<mail_id>",
    summary="A stored mail",
    operation_id=GET_MAIL,
    responses=responses(200, MailAnswer, "The mail", 403, 404),
)
def get_mail(mail_id: StoredId) -> dict[str, Any]:
    return {"mail": team_mail(_caller(), mail_id, wiring.root().storage).public()}


@app.get(
    "/api/core/mail/<mail_id>/raw",
    summary="A presigned URL to a stored mail's raw message (members only)",
    responses=responses(200, RawMailAnswer, "The raw message's download URL", 403, 404),
)
def get_raw_mail(mail_id: StoredId) -> dict[str, Any]:
    mail, url = team_raw_mail(_caller(), mail_id, wiring.root().storage)
    return {"raw": {"url": url, "size": mail.raw_size}}


@app.post(
    "/api/core/mail/<mail_id>/parse",
    summary="Parse a received mail again from its raw message (after a parser fix), keeping its id",
    responses=responses(
        200, MailAnswer, "The mail as parsed now (parse_error when it still fails)", 403, 404, 409
    ),
)
def parse_mail_again(mail_id: StoredId) -> dict[str, Any]:
    return {"mail": parse_again(_caller(), mail_id, wiring.root().storage).public()}


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
