"""System mail (no team): invoked directly with {"to", "subject", "body_text" and/or "body_html"};
sent with the system SMTP configuration from the secret SYSTEM_MAIL_SECRET_NAME."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.parser import ValidationError, parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore import runtime
from mailcore.errors import MailServiceError
from mailcore.models import SendRequest
from mailcore.protocols.transcript import Transcript
from mailcore.services.system import load_system_config, send_system_mail
from mailcore.teams import describe_validation_error

logger = Logger()


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        request = parse(event=event, model=SendRequest)
    except ValidationError as error:
        return {"status": "invalid", "error": describe_validation_error(error)}
    try:
        config = load_system_config(runtime.directory().provider, runtime.settings().system_secret_name)
        mail = send_system_mail(
            config,
            request,
            storage=runtime.storage(),
            transcript=Transcript(),
            tls_context=runtime.tls_context(),
        )
    except MailServiceError as error:
        logger.warning("system mail failed", extra={"code": error.code, "reason": error.message})
        return {
            "status": "failed",
            "error": error.message,
            "mail_id": getattr(getattr(error, "mail", None), "id", None),
        }
    return {"status": mail.status.value, "mail_id": mail.id}
