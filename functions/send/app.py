"""POST /api/core/mail/send/{account}: send one mail with a team account over SMTP."""

from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore import runtime
from mailcore.api import current_caller, debug_transcript, make_resolver
from mailcore.models import SendRequest
from mailcore.services.send import send_mail

logger = Logger()
app = make_resolver()


@app.post("/api/core/mail/send/<account>", summary="Send one mail with a team's account")
def send(
    account: str,
    request: Annotated[SendRequest, Body()],
    team: Annotated[str | None, Query(description="the team, when two of yours have this account")] = None,
    debug: Annotated[bool, Query(description="add the SMTP conversation (credentials redacted)")] = False,
) -> dict[str, Any]:
    target = runtime.directory().resolve_account(current_caller(app), account, team)
    with debug_transcript(debug) as transcript:
        mail = send_mail(
            target,
            request,
            storage=runtime.storage(),
            transcript=transcript,
            tls_context=runtime.tls_context(),
            tokens=runtime.tokens(),
            limiter=runtime.limiter(),
        )
    return {"mail": mail.public(), **({"debug": transcript.lines} if debug else {})}


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
