"""No item of an outgoing mail can exceed DynamoDB's 400 KB, however long the server's answers
and however many times the mail is tried: a mail whose outcome cannot be written stays `sending`."""

from __future__ import annotations

from datetime import UTC, datetime

from mailcore.adapters.dynamodb import DynamoMail
from mailcore.errors import MailServerError
from mailcore.models import MAX_ADDRESSES, Mail
from mailcore.protocols.smtp import refused_reply
from mailcore.services.retry import ATTEMPT_LOG_LIMIT, attempt_entry, capped

from bench.item_size import DYNAMODB_ITEM_LIMIT, item_size
from tests.fakes import MemoryBlobs

WIDE = "\U0001f600"  # four bytes in UTF-8
NOW = datetime(2026, 12, 1, tzinfo=UTC)
# A multi-line reply as long as a server cares to make it (smtplib reads any number of lines).
LONG_REPLY = "450-" + (WIDE * 8000 + "\r\n450-") * 10 + "try later"


def worst_outgoing_mail() -> Mail:
    recipients = [f"{'u' * 60}{n}@{'d' * 60}.test" for n in range(3 * MAX_ADDRESSES)]
    failure = MailServerError(LONG_REPLY, reply=LONG_REPLY, temporary=True)
    log: list[dict] = []
    for _ in range(ATTEMPT_LOG_LIMIT + 10):
        entry = attempt_entry(NOW, recipients, outcome="deferred", reply=failure.reply, error=failure.message)
        log = capped([*log, entry])
    return Mail(
        id="m1",
        team="t",
        account="a",
        direction="out",
        status="deferred",
        created_at=NOW,
        to=recipients[:100],
        cc=recipients[100:200],
        bcc=recipients[200:],
        refused={address: refused_reply(LONG_REPLY) for address in recipients},
        reply=failure.reply,
        error=failure.message,
        attempts=len(log),
        attempt_log=log,
    )


def test_the_item_of_a_mail_tried_for_days_against_a_verbose_server_stays_under_dynamodbs_limit():
    item = DynamoMail("mail", blobs=MemoryBlobs())._item(worst_outgoing_mail())  # type: ignore[arg-type]

    assert item_size(item) < DYNAMODB_ITEM_LIMIT


def test_an_attempt_keeps_the_count_of_recipients_it_does_not_name():
    entry = attempt_entry(NOW, [f"r{n}@example.test" for n in range(300)], outcome="sent", reply="250 ok")

    assert entry["recipient_count"] == 300 and len(entry["recipients"]) < 300
