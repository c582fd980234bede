"""Layer modules log through Powertools child loggers: a line names its team, account and mail as
JSON keys of the function's log, never as text only."""

from __future__ import annotations

import json

import pytest
from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from mailcore import api, oauth2, telemetry
from mailcore.adapters import eventbridge
from mailcore.protocols.transcript import Transcript
from mailcore.services import dispatch, outbox, team_writes
from mailcore.services import pull as pull_service
from mailcore.services.pull import pull_accounts

from tests.fakes import memory_storage
from tests.unit.test_pull_pipeline import TARGET


@pytest.mark.parametrize(
    "module", [api, eventbridge, oauth2, telemetry, dispatch, outbox, pull_service, team_writes]
)
def test_layer_modules_log_through_a_child_of_the_functions_powertools_logger(module):
    assert isinstance(module.logger, Logger) and module.logger.child


def test_a_failed_pull_is_logged_as_json_naming_its_team_and_account(caplog):
    storage = memory_storage()

    def unreachable(*args: object) -> bool:
        raise ConnectionError("dynamodb unreachable")

    storage.pull_state.acquire_lease = unreachable  # type: ignore[method-assign]
    pull_accounts([TARGET], storage=storage, transcript=Transcript(), tls_context=None)  # type: ignore[arg-type]

    (record,) = [record for record in caplog.records if record.name == pull_service.logger.name]
    line = json.loads(LambdaPowertoolsFormatter().format(record))
    assert line["message"] == "pull failed"
    assert (line["team"], line["account"]) == ("acme", "main")
    assert "secret" not in json.dumps(line)  # the account's password is "secret"
