"""onComplete: events on the mail EventBridge bus so that other services react without polling.

Events name the mail (team, account, mail id and what happened), never its content.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Named here too: the port is in mailcore.ports, most callers import it with the event types.
from mailcore.ports import EventPublisher as EventPublisher

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
