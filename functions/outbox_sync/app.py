"""The schedule's outbox sync, the safety net behind push: every mail team's mail still queued or
claimed by an outbox run that died, and the mail (a team's or system mail) of a direct send that
died, recorded `unknown` once its hold is over (never sent again by itself)."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore.telemetry import log_metrics
from mailcore.wiring import outbox as wiring

logger = Logger()
# The init reads and checks the settings (a missing variable fails it, by name); clients come on first use.
wiring.root()


@logger.inject_lambda_context
@log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    return wiring.root().sync_every_team(seconds_left=lambda: context.get_remaining_time_in_millis() / 1000)
