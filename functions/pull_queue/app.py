"""The pull queue: one account per message, put there by the dispatcher on the schedule (partial
batch failures; an account that ran out of time goes back on the queue)."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore.telemetry import log_metrics
from mailcore.wiring import pull as wiring

logger = Logger()
# The init reads and checks the settings (a missing variable fails it, by name); clients come on first use.
wiring.root()
processor = BatchProcessor(event_type=EventType.SQS)


def _pull_record(record: SQSRecord) -> None:
    context = processor.lambda_context
    wiring.root().pull_queued(
        record.json_body, seconds_left=lambda: context.get_remaining_time_in_millis() / 1000
    )


@logger.inject_lambda_context
@log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return dict(
        process_partial_response(
            event=event, record_handler=_pull_record, processor=processor, context=context
        )
    )
