"""The schedule's dispatcher: one pull-queue message per account of every mail team."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore import runtime
from mailcore.services.dispatch import dispatch_pulls
from mailcore.telemetry import log_metrics

logger = Logger()


@logger.inject_lambda_context
@log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    enqueued = dispatch_pulls(runtime.directory(), runtime.pull_queue())
    logger.info("pulls enqueued", extra={"accounts": enqueued})
    return {"enqueued": enqueued}
