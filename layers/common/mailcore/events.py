"""onComplete: events on the mail EventBridge bus so that other services react without polling.

Events name the mail (team, account, mail id and what happened), never its content.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from botocore.client import BaseClient

SOURCE = "mail-service"
MAIL_RECEIVED = "MailReceived"
MAIL_SENT = "MailSent"
MAIL_FAILED = "MailFailed"
MAIL_DEFERRED = "MailDeferred"
MAIL_CANCELLED = "MailCancelled"
MAIL_BOUNCED = "MailBounced"
# A received message stored raw and unparsed (over its budget, or refused by storage): `reason`.
MAIL_SET_ASIDE = "MailSetAside"
ACCOUNT_CHANGED = "AccountChanged"
# PutEvents takes at most 10 entries a call.
_BATCH = 10

logger = Logger(child=True)


@dataclass(frozen=True)
class MailEvent:
    detail_type: str
    team: str
    account: str
    mail_id: str
    extra: dict[str, Any] = field(default_factory=dict)

    def detail(self) -> dict[str, Any]:
        return {"team": self.team, "account": self.account, "mail_id": self.mail_id, **self.extra}


@dataclass(frozen=True)
class AccountChanged:
    """An account was created, changed or deleted: who did it and which fields (never a value)."""

    detail_type: str
    team: str
    account: str
    action: str
    by: str
    fields: list[str]

    def detail(self) -> dict[str, Any]:
        return {
            "team": self.team,
            "account": self.account,
            "action": self.action,
            "by": self.by,
            "fields": self.fields,
        }


Event = MailEvent | AccountChanged


class EventPublisher(Protocol):
    def publish(self, events: Sequence[Event]) -> None: ...


class EventBridgePublisher:
    def __init__(self, bus_name: str, client: BaseClient | None = None) -> None:
        self.bus_name = bus_name
        self._client = client

    @property
    def client(self) -> BaseClient:
        if self._client is None:
            from mailcore.storage.aws import aws_client

            self._client = aws_client("events")
        return self._client

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


class MemoryPublisher:
    def __init__(self) -> None:
        self.events: list[Event] = []

    def publish(self, events: Sequence[Event]) -> None:
        self.events.extend(events)
