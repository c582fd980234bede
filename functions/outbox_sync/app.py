"""The schedule's outbox sync, the safety net behind push: mail still queued, or claimed by a
sender that died, of every mail team."""

from typing import Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.utilities.typing import LambdaContext
from mailcore.errors import MailServiceError
from mailcore.telemetry import log_metrics
from mailcore.wiring import outbox as wiring

logger = Logger()
# The init reads and checks the settings (a missing variable fails it, by name); clients come on first use.
wiring.root()


@logger.inject_lambda_context
@log_metrics
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, int]:
    directory = wiring.root().directory
    counts = {"sent": 0, "failed": 0, "unknown": 0, "skipped": 0, "errors": 0, "deferred": 0, "released": 0}
    with wiring.root().outbox(seconds_left=lambda: context.get_remaining_time_in_millis() / 1000) as outbox:
        for team in directory.all_teams():
            try:  # one team's broken secret must not stop the others' mail
                targets = directory.accounts_of([team])
            except MailServiceError as error:
                logger.warning("outbox sync skipped a team", extra={"team": team, "reason": error.message})
                continue
            for target in targets:
                for outcome, mails in outbox.sync(target).public().items():
                    counts[outcome] += len(mails)
    return counts
