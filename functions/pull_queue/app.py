"""The pull queue: one account per message, put there by the dispatcher on the schedule (partial
batch failures; an account that ran out of time goes back on the queue)."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore import runtime
from mailcore.services.dispatch import pull_queued_account
from mailcore.telemetry import log_metrics

logger = Logger()
processor = BatchProcessor(event_type=EventType.SQS)


def _pull_record(record: SQSRecord) -> None:
    context = processor.lambda_context
    pull_queued_account(
        record.json_body,
        directory=runtime.directory(),
        storage=runtime.storage(),
        queue=runtime.pull_queue(),
        tls_context=runtime.tls_context(),
        seconds_left=lambda: context.get_remaining_time_in_millis() / 1000,
        events=runtime.events(),
        tokens=runtime.tokens(),
    )


@logger.inject_lambda_context
@log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=_pull_record, processor=processor, context=context
        )
    )
