"""EventBridge: the mail events on the service's bus (port EventPublisher)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aws_lambda_powertools import Logger

from mailcore.adapters.base import AwsAdapter
from mailcore.events import SOURCE

if TYPE_CHECKING:
    from botocore.client import BaseClient

    from mailcore.events import Event

# PutEvents takes at most 10 entries a call.
_BATCH = 10

logger = Logger(child=True)


class EventBridgePublisher(AwsAdapter):
    service = "events"

    def __init__(self, bus_name: str, client: BaseClient | None = None) -> None:
        self.bus_name = bus_name
        super().__init__(client)

    def publish(self, events: Sequence[Event]) -> None:
        """Puts the events; entries EventBridge refuses are retried once, then logged (the mail
        itself is stored either way: an event is a notification, not the record)."""
        entries = [
            {
                "Source": SOURCE,
                "DetailType": event.detail_type,
                "Detail": json.dumps(event.detail()),
                "EventBusName": self.bus_name,
            }
            for event in events
        ]
        for start in range(0, len(entries), _BATCH):
            batch = entries[start : start + _BATCH]
            for attempt in range(2):
                answer = self.client.put_events(Entries=batch)
                if not answer.get("FailedEntryCount"):
                    break
                batch = [
                    entry
                    for entry, result in zip(batch, answer["Entries"], strict=True)
                    if "ErrorCode" in result
                ]
                if attempt:
                    logger.error("could not put events", extra={"events": len(batch), "bus": self.bus_name})
