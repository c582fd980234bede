"""Layer modules log through Powertools child loggers: a line names its team, account and mail as
JSON keys of the function's log, never as text only."""

from __future__ import annotations

import io
import json
import logging

import pytest
from aws_lambda_powertools.logging.formatter import LambdaPowertoolsFormatter
from mailcore.protocols.transcript import Transcript
from mailcore.services import pull as pull_service
from mailcore.services.pull import pull_accounts
from mailcore.storage.memory import memory_storage

from tests.unit.test_pull_pipeline import TARGET


@pytest.fixture
def function_log():
    """What the function's Powertools Logger (the parent of the layer's child loggers) writes."""
    parent = logging.getLogger(pull_service.logger.name.split(".")[0])
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(LambdaPowertoolsFormatter())
    parent.addHandler(handler)
    yield written
    parent.removeHandler(handler)


def test_a_failed_pull_is_logged_as_json_naming_its_team_and_account(function_log):
    storage = memory_storage()

    def unreachable(*args: object) -> bool:
        raise ConnectionError("dynamodb unreachable")

    storage.pull_state.acquire_lease = unreachable  # type: ignore[method-assign]
    pull_accounts([TARGET], storage=storage, transcript=Transcript(), tls_context=None)  # type: ignore[arg-type]

    (line,) = [json.loads(text) for text in function_log.getvalue().splitlines()]
    assert line["message"] == "pull failed"
    assert (line["team"], line["account"]) == ("acme", "main")
    assert "secret" not in function_log.getvalue()  # the account's password is "secret"
