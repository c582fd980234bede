"""The schedule's dispatcher: one pull-queue message per account of every mail team."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore.telemetry import log_metrics
from mailcore.wiring import pull as wiring

logger = Logger()
# The init reads and checks the settings (a missing variable fails it, by name); clients come on first use.
wiring.root()


@logger.inject_lambda_context
@log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    enqueued = wiring.root().dispatch()
    logger.info("pulls enqueued", extra={"accounts": enqueued})
    return {"enqueued": enqueued}
