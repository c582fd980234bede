"""SQS: the queue of scheduled pulls (port PullQueue) and the outbox's dead letters (port DeadLetters)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from mailcore.adapters.base import AwsAdapter

if TYPE_CHECKING:
    from botocore.client import BaseClient

# SendMessageBatch takes at most 10 entries a call.
_BATCH = 10


class SqsDeadLetters(AwsAdapter):
    """The outbox's dead-letter queue: one JSON message per mail that ended failed after retries."""

    service = "sqs"

    def __init__(self, queue_url: str, client: BaseClient | None = None) -> None:
        self.queue_url = queue_url
        super().__init__(client)

    def put(self, body: dict[str, Any]) -> None:
        self.client.send_message(QueueUrl=self.queue_url, MessageBody=json.dumps(body))


class SqsPullQueue(AwsAdapter):
    service = "sqs"

    def __init__(self, url: str, client: BaseClient | None = None) -> None:
        self.url = url
        super().__init__(client)

    def send(self, accounts: list[dict[str, str]]) -> None:
        failed = 0
        for start in range(0, len(accounts), _BATCH):
            entries = [
                {"Id": str(index), "MessageBody": json.dumps(account, sort_keys=True)}
                for index, account in enumerate(accounts[start : start + _BATCH])
            ]
            for _ in range(2):
                answer = self.client.send_message_batch(QueueUrl=self.url, Entries=entries)
                refused = {entry["Id"] for entry in answer.get("Failed", [])}
                entries = [entry for entry in entries if entry["Id"] in refused]
                if not entries:
                    break
            failed += len(entries)
        if failed:
            raise RuntimeError(f"{failed} of {len(accounts)} pulls could not be enqueued")
