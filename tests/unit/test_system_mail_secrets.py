"""A system-mail request that fails validation never carries its values (reset links, codes)
into a log line or an exception text."""

import json

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from mailcore.errors import InvalidInput

from tests.stack import function_environment
from tests.support import LambdaContext, load_function

RESET_URL = "https://app.example.test/reset?token=SECRET-RESET-TOKEN-42"
MISSPELLED = {"template": "password_reset", "to": ["user@example.test"], "variabels": {"url": RESET_URL}}


@pytest.fixture
def system_mail_app():
    with function_environment("SystemMailQueueFunction"):
        yield load_function("system_mail")


def test_a_queued_request_that_fails_validation_fails_without_its_values_in_the_error_or_log(
    system_mail_app, capsys
):
    event = {
        "Records": [
            {
                "messageId": "m-1",
                "receiptHandle": "r",
                "body": json.dumps(MISSPELLED),
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:SystemMailQueue",
                "awsRegion": "us-east-1",
            }
        ]
    }
    # Every record of the batch failed: the processor raises, with each record's error text.
    with pytest.raises(BatchProcessingError) as caught:
        system_mail_app.on_queue(event, LambdaContext())
    captured = capsys.readouterr()
    assert "variabels" in str(caught.value)
    assert "SECRET-RESET-TOKEN" not in str(caught.value) + captured.out + captured.err


def test_an_event_that_fails_validation_raises_an_error_naming_the_field_not_its_value(system_mail_app):
    event = {"detail-type": "SystemMailRequested", "source": "app", "id": "e-1", "detail": MISSPELLED}
    with pytest.raises(InvalidInput) as caught:
        system_mail_app.on_event(event, LambdaContext())
    assert "variabels" in str(caught.value) and "SECRET-RESET-TOKEN" not in str(caught.value)


def test_variables_over_64_kb_are_refused_naming_the_field_not_their_value(system_mail_app):
    huge = {
        "template": "password_reset",
        "to": ["user@example.test"],
        "variables": {"url": RESET_URL * 2_000},
    }
    event = {"detail-type": "SystemMailRequested", "source": "app", "id": "e-2", "detail": huge}
    with pytest.raises(InvalidInput) as caught:
        system_mail_app.on_event(event, LambdaContext())
    assert "variables: " in str(caught.value) and "64 KB" in str(caught.value)
    assert "SECRET-RESET-TOKEN" not in str(caught.value)
