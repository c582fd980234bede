"""The local stack's drivers of SQS, DynamoDB-stream and EventBridge-rule event sources."""

import json
import threading
from pathlib import Path

import boto3
import pytest

from local.aws import create_resources, start_moto_server
from local.event_sources import EventSources, matches_filters
from local.template import Template
from tests.support import wait_until

TEMPLATE = """
Transform: AWS::Serverless-2016-10-31
Resources:
  Jobs:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: 1
  Dead:
    Type: AWS::SQS::Queue
  Items:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - AttributeName: id
          AttributeType: S
      KeySchema:
        - AttributeName: id
          KeyType: HASH
      StreamSpecification:
        StreamViewType: NEW_AND_OLD_IMAGES
  Bus:
    Type: AWS::Events::EventBus
    Properties:
      Name: unit-bus
  Worker:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: tests/unit/data/fn_echo/
      Handler: app.lambda_handler
      Runtime: python3.13
      EventInvokeConfig:
        MaximumRetryAttempts: 1
        DestinationConfig:
          OnFailure:
            Type: SQS
            Destination: !GetAtt Dead.Arn
      Events:
        FromQueue:
          Type: SQS
          Properties:
            Queue: !GetAtt Jobs.Arn
            BatchSize: 5
            FunctionResponseTypes:
              - ReportBatchItemFailures
        FromStream:
          Type: DynamoDB
          Properties:
            Stream: !GetAtt Items.StreamArn
            StartingPosition: LATEST
            FilterCriteria:
              Filters:
                - Pattern: '{"dynamodb": {"NewImage": {"status": {"S": ["queued"]}}}}'
        FromRule:
          Type: EventBridgeRule
          Properties:
            EventBusName: !Ref Bus
            Pattern:
              detail-type:
                - Ping
                - Fail
"""


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.fail_ids: set[str] = set()
        self.lock = threading.Lock()

    def __call__(self, function_id: str, event: dict, *, asynchronous: bool = False) -> dict:
        with self.lock:
            self.calls.append((function_id, event))
        if event.get("detail-type") == "Fail":
            raise RuntimeError("the handler failed")
        failures = [
            {"itemIdentifier": r["messageId"]}
            for r in event.get("Records", [])
            if r.get("eventSource") == "aws:sqs" and r["body"] in self.fail_ids
        ]
        return {"batchItemFailures": failures}

    def bodies(self, source: str) -> list:
        with self.lock:
            found = []
            for _, event in self.calls:
                for record in event.get("Records", []):
                    if record.get("eventSource") == source:
                        found.append(record)
                if source == "events" and "detail-type" in event:
                    found.append(event)
            return found


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    server, endpoint = start_moto_server()
    path = Path(tmp_path_factory.mktemp("tpl")) / "template.yaml"
    path.write_text(TEMPLATE)
    session = boto3.session.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    template = Template.load(path, stack_name="events", endpoint_url=endpoint)
    names = create_resources(template, session, endpoint)
    recorder = Recorder()
    sources = EventSources(
        template,
        boto3.session.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"),
        recorder,
        region="us-east-1",
    )
    import os

    saved = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    started = sources.start()
    yield session, names, recorder, started
    sources.stop()
    if saved is None:
        os.environ.pop("AWS_ENDPOINT_URL", None)
    else:
        os.environ["AWS_ENDPOINT_URL"] = saved
    server.stop()


def client(session, name):
    import os

    return session.client(name, endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def test_every_event_source_of_the_template_is_driven(world):
    _, _, _, started = world
    assert len(started) == 3


def test_queue_messages_reach_the_function_in_batches(world):
    session, names, recorder, _ = world
    sqs = client(session, "sqs")
    url = sqs.get_queue_url(QueueName=names["Jobs"].rsplit("/", 1)[-1])["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="job-1")
    wait_until(lambda: any(r["body"] == "job-1" for r in recorder.bodies("aws:sqs")))


def test_a_reported_batch_item_failure_comes_back_and_the_others_do_not(world):
    session, names, recorder, _ = world
    sqs = client(session, "sqs")
    url = sqs.get_queue_url(QueueName=names["Jobs"].rsplit("/", 1)[-1])["QueueUrl"]
    recorder.fail_ids.add("job-fails")
    sqs.send_message(QueueUrl=url, MessageBody="job-fails")
    sqs.send_message(QueueUrl=url, MessageBody="job-ok")
    wait_until(lambda: sum(r["body"] == "job-fails" for r in recorder.bodies("aws:sqs")) >= 2)
    assert sum(r["body"] == "job-ok" for r in recorder.bodies("aws:sqs")) == 1
    recorder.fail_ids.clear()


def test_stream_records_are_filtered_by_the_filter_criteria(world):
    session, names, recorder, _ = world
    dynamodb = client(session, "dynamodb")
    dynamodb.put_item(TableName=names["Items"], Item={"id": {"S": "a"}, "status": {"S": "sent"}})
    dynamodb.put_item(TableName=names["Items"], Item={"id": {"S": "b"}, "status": {"S": "queued"}})
    # The shard hands its records over in order: once "b" came, "a" (written before it) was passed.
    wait_until(lambda: any(r["dynamodb"]["Keys"]["id"]["S"] == "b" for r in recorder.bodies("aws:dynamodb")))
    assert not any(r["dynamodb"]["Keys"]["id"]["S"] == "a" for r in recorder.bodies("aws:dynamodb"))


def test_events_matching_the_rule_reach_the_function(world):
    session, _, recorder, _ = world
    events = client(session, "events")
    # "Other" goes first: once "Ping", behind it on the rule's queue, came, "Other" was passed.
    events.put_events(
        Entries=[{"Source": "app", "DetailType": "Other", "Detail": "{}", "EventBusName": "unit-bus"}]
    )
    events.put_events(
        Entries=[
            {
                "Source": "app",
                "DetailType": "Ping",
                "Detail": json.dumps({"n": 1}),
                "EventBusName": "unit-bus",
            }
        ]
    )
    wait_until(lambda: any(e["detail-type"] == "Ping" for e in recorder.bodies("events")))
    assert not any(e["detail-type"] == "Other" for e in recorder.bodies("events"))


def test_filter_criteria_without_filters_let_everything_through():
    assert matches_filters([], {"anything": 1})
    assert not matches_filters([{"Pattern": '{"a": ["x"]}'}], {"a": "y"})


def test_a_failing_event_is_retried_then_described_on_the_on_failure_queue(world):
    session, names, recorder, _ = world
    client(session, "events").put_events(
        Entries=[
            {
                "Source": "app",
                "DetailType": "Fail",
                "Detail": json.dumps({"n": 2}),
                "EventBusName": "unit-bus",
            }
        ]
    )
    sqs = client(session, "sqs")
    url = sqs.get_queue_url(QueueName=names["Dead"].rsplit("/", 1)[-1])["QueueUrl"]
    received: list[dict] = []
    wait_until(lambda: received.extend(sqs.receive_message(QueueUrl=url).get("Messages", [])) or received)
    record = json.loads(received[0]["Body"])
    assert record["requestContext"]["condition"] == "RetriesExhausted"
    assert record["requestContext"]["approximateInvokeCount"] == 2  # MaximumRetryAttempts: 1
    assert record["requestPayload"]["detail"] == {"n": 2}
    assert sum(e["detail-type"] == "Fail" for e in recorder.bodies("events")) == 2
