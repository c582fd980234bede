"""Push: the MailTable stream's new or re-queued mail, sent within seconds of being queued."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore.telemetry import log_metrics
from mailcore.wiring import outbox as wiring

logger = Logger()
# The init reads and checks the settings (a missing variable fails it, by name); clients come on first use.
wiring.root()
processor = BatchProcessor(event_type=EventType.DynamoDBStreams)


@logger.inject_lambda_context
@log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # One connection per account for the whole batch; a record fails (and Lambda retries it)
    # only when its outcome could not be recorded, never for a refused mail.
    ids = [DynamoDBRecord(record).dynamodb.keys["id"] for record in event["Records"]]  # type: ignore[union-attr]
    report = wiring.root().send(ids, seconds_left=lambda: context.get_remaining_time_in_millis() / 1000)

    def check_record(record: DynamoDBRecord) -> None:
        mail_id = record.dynamodb.keys["id"]  # type: ignore[union-attr]
        if mail_id in report.errors:
            raise RuntimeError(f"mail {mail_id}: {report.errors[mail_id]}")

    return dict(process_partial_response(event, check_record, processor, context))
