"""System mail (no team) from a template, sent with the system SMTP configuration.

One handler per trigger, each its own function in template.yaml: `lambda_handler`, direct
invocation ({"template", "to", "variables"}; answers the outcome); `on_event`, the EventBridge rule
(detail-type SystemMailRequested, the same JSON as detail); `on_queue`, SystemMailQueue (the same
JSON as message body; partial batch failures); `on_cognito`, the user pool's custom email sender
(its code decrypted with the stack's KMS key).
"""

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.cognito_user_pool_event import (
    CustomEmailSenderTriggerEvent,
)
from aws_lambda_powertools.utilities.data_classes.event_bridge_event import EventBridgeEvent
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig, idempotent_function
from aws_lambda_powertools.utilities.parser import ValidationError, parse
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore.errors import InvalidInput, MailServiceError
from mailcore.services.system import SystemMailRequest, SystemMailResult
from mailcore.teams import describe_validation_error
from mailcore.telemetry import log_metrics
from mailcore.wiring import system_mail as wiring

TEMPLATES = Path(__file__).parent / "templates"
logger = Logger()
# The init reads and checks the settings (a missing variable fails it, by name); clients come on first use.
wiring.root(TEMPLATES)
processor = BatchProcessor(event_type=EventType.SQS)

# A system mail's SMTP session ends ANSWER_MARGIN_SECONDS (services/send.py: the outcome written,
# the answer given) and its trigger's margin before the function's Timeout: a server dripping its
# replies fails the mail in time (stored `failed`, or `unknown` once the message went out), and the
# trigger retries it, where Lambda would stop the function mid-send. The margin is what the
# trigger still does after the outcome is written: EventBridge and SQS, Powertools writes (or, on
# a failure, deletes) the delivery's idempotency record; a direct invocation and Cognito nothing
# (Cognito invokes its custom sender asynchronously: the function's Timeout is the limit, not the
# 5 s of its synchronous triggers, and Lambda retries a failure).
DIRECT_MARGIN_SECONDS = 0.0
EVENT_MARGIN_SECONDS = 2.0
QUEUE_MARGIN_SECONDS = 2.0
COGNITO_MARGIN_SECONDS = 0.0


def seconds_left(context: LambdaContext, margin: float) -> Callable[[], float]:
    """The function's time left, less `margin`, read when each try of the mail begins."""
    return lambda: context.get_remaining_time_in_millis() / 1000 - margin


def logged(result: SystemMailResult) -> SystemMailResult:
    # Never the variables: they carry codes and links.
    logger.info("system mail", extra={"template": result.template, "status": result.status})
    return result


# SQS and EventBridge deliver at least once: a message or event that comes again (same id)
# answers what the first delivery did instead of mailing the recipient a second time.
once = IdempotencyConfig(event_key_jmespath="delivery_id", expires_after_seconds=24 * 3600)
# Records are keyed on this, not on the module and function (Powertools' default): every execution
# environment, and every version of this file, must find the records the others wrote.
IDEMPOTENCY_PREFIX = "system-mail"


@cache
def deliver_once() -> Callable[..., dict[str, Any]]:
    # Made on first use: the persistence layer's client is not worth a cold start for other events.
    @idempotent_function(
        data_keyword_argument="delivery",
        persistence_store=wiring.root(TEMPLATES).idempotency_store(),
        config=once,
        key_prefix=IDEMPOTENCY_PREFIX,
    )
    def deliver_delivery(delivery: dict[str, Any], time_left: Callable[[], float]) -> dict[str, Any]:
        request = validated(delivery["request"])
        result = logged(wiring.root(TEMPLATES).deliver(request, delivery["delivery_id"], time_left))
        return {"status": result.status, "mail_id": result.mail_id}

    return deliver_delivery


def validated(request: Any) -> SystemMailRequest:
    """The request, or InvalidInput naming what is wrong but never a value: pydantic's own error
    text holds the input (a reset link, a code), and Lambda and the batch processor log it."""
    try:
        return SystemMailRequest.model_validate(request)
    except ValidationError as error:
        raise InvalidInput(f"invalid system mail request: {describe_validation_error(error)}") from None


def _queued(record: SQSRecord, lambda_context: LambdaContext) -> None:
    body = record.json_body
    # A queue fed by an EventBridge rule holds whole events: take their detail.
    request = body.get("detail", body) if "detail-type" in body else body
    validated(request)  # a bad request fails its record, never the cache
    deliver_once()(
        delivery={"delivery_id": f"sqs:{record.message_id}", "request": request},
        time_left=seconds_left(lambda_context, QUEUE_MARGIN_SECONDS),
    )


def _direct(event: dict[str, Any], delivery: str, time_left: Callable[[], float]) -> dict[str, Any]:
    try:
        request = parse(event=event, model=SystemMailRequest)
        result = logged(wiring.root(TEMPLATES).deliver(request, delivery, time_left))
    except ValidationError as error:
        return {"status": "invalid", "error": describe_validation_error(error)}
    except InvalidInput as error:
        return {"status": "invalid", "error": error.message, "field": error.field}
    except MailServiceError as error:
        logger.warning("system mail failed", extra={"code": error.code, "reason": error.message})
        mail = getattr(error, "mail", None)
        return {"status": "failed", "error": error.message, "mail_id": getattr(mail, "id", None)}
    return {"status": result.status, "mail_id": result.mail_id}


@logger.inject_lambda_context
@log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Lambda retries an asynchronous invocation with the same request id.
    return _direct(event, f"invoke:{context.aws_request_id}", seconds_left(context, DIRECT_MARGIN_SECONDS))


@logger.inject_lambda_context
@log_metrics
def on_event(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # A delivery still "in progress" when its Lambda died may be retried once this run's time is up.
    once.register_lambda_context(context)
    # A failure raises: Lambda retries the asynchronous event, then hands it to the DLQ.
    # The detail is validated; the envelope is taken as it comes (moto's lacks `account`).
    bridged = EventBridgeEvent(event)
    validated(bridged.detail)
    answer = deliver_once()(
        delivery={"delivery_id": f"event:{bridged.get_id}", "request": bridged.detail},
        time_left=seconds_left(context, EVENT_MARGIN_SECONDS),
    )
    return {"status": answer["status"]}


@logger.inject_lambda_context
@log_metrics
def on_queue(event: dict[str, Any], context: LambdaContext) -> Any:
    once.register_lambda_context(context)
    return process_partial_response(event=event, record_handler=_queued, processor=processor, context=context)


@logger.inject_lambda_context
@log_metrics
def on_cognito(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    trigger = CustomEmailSenderTriggerEvent(event)
    result = wiring.root(TEMPLATES).deliver_cognito(
        trigger.trigger_source,
        trigger.user_name,
        trigger.request.user_attributes,
        trigger.request.get("code"),
        f"cognito:{context.aws_request_id}",
        seconds_left(context, COGNITO_MARGIN_SECONDS),
    )
    logged(result)
    return event
