"""The event sources that moto stores but never fires, driven the way Lambda drives them.

For every event source mapping (SQS, DynamoDB streams) and EventBridge rule target of the
translated template (what CloudFormation creates from template.yaml), a thread polls the source in
moto and invokes the function (its execution environments: local/gateway.py FunctionRuntime), as
Lambda's event source mappings and EventBridge targets do in the cloud; a failed invocation, an
environment killed over its MemorySize or Timeout included, is treated as Lambda treats it:
- SQS: batches of up to BatchSize; with ReportBatchItemFailures only the failed messages stay
  on the queue, otherwise a raised error leaves the whole batch (moto's redrive policy moves a
  message to its dead-letter queue after maxReceiveCount receives, as SQS does).
- DynamoDB streams: records from every shard, filtered by FilterCriteria (the same pattern
  language as EventBridge, matched with moto's own matcher), in order; failed records are
  retried up to MaximumRetryAttempts and then described on the OnFailure destination queue.
- EventBridgeRule: the rule is created in moto on its bus with a local SQS queue as its target
  (moto matches the pattern and delivers), and that queue is polled to invoke the function
  asynchronously: retried per its EventInvokeConfig, then described on its OnFailure queue.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
from moto.events.models import EventPattern

from local.template import Template

Invoke = Callable[..., Any]  # (function id, event, *, asynchronous=False) -> result


def matches_filters(filters: list[dict[str, Any]], record: dict[str, Any]) -> bool:
    """Lambda's FilterCriteria: a record passes when any one pattern matches (none = all pass)."""
    if not filters:
        return True
    for entry in filters:
        pattern = entry.get("Pattern")
        text = pattern if isinstance(pattern, str) else json.dumps(pattern)
        if EventPattern.load(text).matches_event(record):  # type: ignore[arg-type]
            return True
    return False


def _filters(properties: dict[str, Any]) -> list[dict[str, Any]]:
    return list((properties.get("FilterCriteria") or {}).get("Filters") or [])


def _arn_name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1].rsplit("/", 1)[-1]


class EventSources:
    def __init__(
        self,
        template: Template,
        session: boto3.session.Session,
        invoke: Invoke,
        *,
        region: str,
        poll_seconds: float = 0.2,
    ) -> None:
        self.template = template
        self.session = session
        self.invoke = invoke
        self.region = region
        self.poll_seconds = poll_seconds
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> list[str]:
        """Starts a poller per event source; answers what it drives, for the start-up message."""
        started = []
        for function_id, name, properties in self.template.event_sources("SQS"):
            queue_url = self._queue_url(str(properties["EventSourceArn"]))
            self._spawn(f"sqs-{name}", self._poll_queue, function_id, queue_url, properties, False)
            started.append(f"SQS {_arn_name(str(properties['EventSourceArn']))} -> {function_id}")
        for function_id, name, properties in self.template.event_sources("DynamoDB"):
            self._spawn(f"stream-{name}", self._poll_stream, function_id, properties)
            started.append(
                f"DynamoDB stream of {_arn_name(str(properties['EventSourceArn']).split('/stream/')[0])} -> {function_id}"
            )
        for function_id, name, properties in self.template.event_sources("EventBridgeRule"):
            queue_url = self._rule_to_queue(function_id, name, properties)
            self._spawn(f"rule-{name}", self._poll_queue, function_id, queue_url, {"BatchSize": 1}, True)
            started.append(f"EventBridge rule {name} -> {function_id}")
        return started

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            while not self._stopping.is_set():
                try:
                    target(*args)
                    return
                except Exception as error:  # keep polling, as the managed service would
                    print(f"local stack: event source {name}: {error}", file=sys.stderr)
                    self._stopping.wait(1.0)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # --- SQS ---------------------------------------------------------------------------------
    def _queue_url(self, queue_arn: str) -> str:
        sqs = self.session.client("sqs")
        return str(sqs.get_queue_url(QueueName=_arn_name(queue_arn))["QueueUrl"])

    def _poll_queue(
        self, function_id: str, queue_url: str, properties: dict[str, Any], unwrap_events: bool
    ) -> None:
        sqs = self.session.client("sqs")
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        batch_size = min(int(properties.get("BatchSize") or 10), 10)
        partial = "ReportBatchItemFailures" in (properties.get("FunctionResponseTypes") or [])
        filters = _filters(properties)
        while not self._stopping.is_set():
            answer = sqs.receive_message(
                QueueUrl=queue_url,
                MaxNumberOfMessages=batch_size,
                WaitTimeSeconds=1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages = answer.get("Messages") or []
            if not messages:
                continue
            if unwrap_events:
                # An EventBridge target: the function gets the event itself, one at a time.
                for message in messages:
                    self._invoke_asynchronously(function_id, json.loads(message["Body"]))
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                continue
            records = [self._sqs_record(message, queue_arn) for message in messages]
            passing = [record for record in records if matches_filters(filters, _with_parsed_body(record))]
            # Lambda deletes messages that no filter matches without invoking anything.
            for record in records:
                if record not in passing:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"])
            if not passing:
                continue
            try:
                result = self.invoke(function_id, {"Records": passing})
            except Exception as error:
                print(f"local stack: {function_id} failed on an SQS batch: {error}", file=sys.stderr)
                continue  # the messages come back after the visibility timeout
            failed = set()
            if partial and isinstance(result, dict):
                failed = {item.get("itemIdentifier") for item in result.get("batchItemFailures") or []}
            for record in passing:
                if record["messageId"] not in failed:
                    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=record["receiptHandle"])

    def _invoke_asynchronously(self, function_id: str, event: dict[str, Any]) -> None:
        """Lambda's asynchronous invocation: a failed event is tried again (EventInvokeConfig's
        MaximumRetryAttempts, 2 by default; here without Lambda's minutes of back-off), then
        described on the OnFailure destination queue, as Lambda describes it."""
        config = self.template.async_invoke_config(function_id)
        attempts = 1 + int(config.get("MaximumRetryAttempts", 2))
        for _ in range(attempts):
            try:
                self.invoke(function_id, event, asynchronous=True)
                return
            except Exception as error:  # the invocation failed: Lambda tries again
                failure = error
        print(f"local stack: {function_id} failed on an event {attempts} times: {failure}", file=sys.stderr)
        destination = ((config.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        if destination:
            record = {
                "version": "1.0",
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                "requestContext": {
                    "requestId": str(uuid.uuid4()),
                    "functionArn": f"{function_id}:{config.get('Qualifier', '$LATEST')}",
                    "condition": "RetriesExhausted",
                    "approximateInvokeCount": attempts,
                },
                "requestPayload": event,
                "responseContext": {
                    "statusCode": 200,
                    "executedVersion": "$LATEST",
                    "functionError": "Unhandled",
                },
                "responsePayload": {"errorMessage": str(failure), "errorType": type(failure).__name__},
            }
            url = self._queue_url(str(destination))
            self.session.client("sqs").send_message(QueueUrl=url, MessageBody=json.dumps(record))

    def _sqs_record(self, message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
        attributes = {
            name: {
                "stringValue": value.get("StringValue"),
                "binaryValue": value.get("BinaryValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value.get("DataType"),
            }
            for name, value in (message.get("MessageAttributes") or {}).items()
        }
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes") or {},
            "messageAttributes": attributes,
            "md5OfBody": message.get("MD5OfBody"),
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": self.region,
        }

    # --- EventBridge rules --------------------------------------------------------------------
    def _rule_to_queue(self, function_id: str, name: str, properties: dict[str, Any]) -> str:
        sqs, events = self.session.client("sqs"), self.session.client("events")
        queue_name = f"local-{function_id}-{name}"[:80]
        queue_url = str(sqs.create_queue(QueueName=queue_name)["QueueUrl"])
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"][
            "QueueArn"
        ]
        bus = _arn_name(str(properties.get("EventBusName") or "default"))
        rule_name = str(properties.get("Name") or f"{function_id}-{name}")[:64]
        events.put_rule(
            Name=rule_name,
            EventBusName=bus,
            EventPattern=json.dumps(properties["EventPattern"]),
            State="ENABLED",
        )
        events.put_targets(
            Rule=rule_name, EventBusName=bus, Targets=[{"Id": "local-function", "Arn": queue_arn}]
        )
        return queue_url

    # --- DynamoDB streams ---------------------------------------------------------------------
    def _poll_stream(self, function_id: str, properties: dict[str, Any]) -> None:
        streams = self.session.client("dynamodbstreams")
        stream_arn = str(properties["EventSourceArn"])
        batch_size = int(properties.get("BatchSize") or 100)
        retries = int(
            properties.get("MaximumRetryAttempts", 2)
            if properties.get("MaximumRetryAttempts") is not None
            else 2
        )
        partial = "ReportBatchItemFailures" in (properties.get("FunctionResponseTypes") or [])
        on_failure = ((properties.get("DestinationConfig") or {}).get("OnFailure") or {}).get("Destination")
        filters = _filters(properties)
        start = "TRIM_HORIZON" if properties.get("StartingPosition") == "TRIM_HORIZON" else "LATEST"
        iterators: dict[str, str | None] = {}
        while not self._stopping.is_set():
            shards = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"].get("Shards") or []
            for shard in shards:
                shard_id = shard["ShardId"]
                if shard_id not in iterators:
                    iterators[shard_id] = streams.get_shard_iterator(
                        StreamArn=stream_arn, ShardId=shard_id, ShardIteratorType=start
                    )["ShardIterator"]
                iterator = iterators[shard_id]
                if iterator is None:
                    continue
                answer = streams.get_records(ShardIterator=iterator, Limit=1000)
                iterators[shard_id] = answer.get("NextShardIterator")
                records = [self._stream_record(record, stream_arn) for record in answer.get("Records") or []]
                records = [record for record in records if matches_filters(filters, record)]
                for offset in range(0, len(records), batch_size):
                    self._deliver_stream_batch(
                        function_id, records[offset : offset + batch_size], retries, partial, on_failure
                    )
            self._stopping.wait(self.poll_seconds)

    def _stream_record(self, record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
        body = dict(record)
        dynamodb = dict(body.get("dynamodb") or {})
        created = dynamodb.get("ApproximateCreationDateTime")
        if created is not None and not isinstance(created, int | float):
            dynamodb["ApproximateCreationDateTime"] = created.timestamp()
        body["dynamodb"] = dynamodb
        body.setdefault("eventID", uuid.uuid4().hex)
        body["eventSourceARN"] = stream_arn
        body.setdefault("awsRegion", self.region)
        body.setdefault("eventSource", "aws:dynamodb")
        return json.loads(json.dumps(body, default=str))

    def _deliver_stream_batch(
        self,
        function_id: str,
        batch: list[dict[str, Any]],
        retries: int,
        partial: bool,
        on_failure: str | None,
    ) -> None:
        attempt = 0
        while batch and not self._stopping.is_set():
            try:
                result = self.invoke(function_id, {"Records": batch})
                failed_from = None
                if partial and isinstance(result, dict) and result.get("batchItemFailures"):
                    sequence = {item.get("itemIdentifier") for item in result["batchItemFailures"]}
                    failed_from = next(
                        (i for i, r in enumerate(batch) if r["dynamodb"].get("SequenceNumber") in sequence), 0
                    )
                if failed_from is None:
                    return
                batch = batch[failed_from:]
            except Exception as error:
                print(f"local stack: {function_id} failed on a stream batch: {error}", file=sys.stderr)
            attempt += 1
            if attempt > retries:
                self._send_to_failure_destination(function_id, batch, on_failure)
                return
            time.sleep(min(0.2 * 2**attempt, 2.0))

    def _send_to_failure_destination(
        self, function_id: str, batch: list[dict[str, Any]], destination: str | None
    ) -> None:
        print(f"local stack: {function_id} gave up on {len(batch)} stream records", file=sys.stderr)
        if not destination:
            return
        sqs = self.session.client("sqs")
        with contextlib.suppress(Exception):
            queue_url = self._queue_url(destination)
            description = {
                "requestContext": {"functionArn": function_id, "condition": "RetryAttemptsExhausted"},
                "DDBStreamBatchInfo": {
                    "batchSize": len(batch),
                    "startSequenceNumber": batch[0]["dynamodb"].get("SequenceNumber"),
                    "endSequenceNumber": batch[-1]["dynamodb"].get("SequenceNumber"),
                    "streamArn": batch[0].get("eventSourceARN"),
                },
            }
            sqs.send_message(QueueUrl=queue_url, MessageBody=json.dumps(description))


def _with_parsed_body(record: dict[str, Any]) -> dict[str, Any]:
    """Lambda matches an SQS filter's `body` against the parsed JSON body when it is JSON."""
    try:
        return {**record, "body": json.loads(record["body"])}
    except (TypeError, ValueError):
        return record
