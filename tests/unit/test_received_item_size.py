"""No item of a received mail can exceed DynamoDB's 400 KB, whatever the mail holds."""

from __future__ import annotations

from mailcore.adapters.dynamodb import BODY_INLINE_LIMIT, DynamoMail
from mailcore.services.pull import prepare_incoming

from bench.item_size import DYNAMODB_ITEM_LIMIT, item_size
from tests.fakes import MemoryBlobs
from tests.unit.test_pull_pipeline import TARGET

WIDE = "\U0001f600"  # four bytes in UTF-8: the most bytes a character can cost


def worst_mail() -> bytes:
    """A mail with every stored header at many times its cap, in four-byte characters, thousands
    of parts, and bodies just under the size that moves them to S3."""
    name = WIDE * 2000
    addresses = ", ".join(f'"{name}{n}" <{"u" * 60}{n}@{"d" * 60}.test>' for n in range(300))
    references = " ".join(f"<{WIDE * 300}{n}@example.test>" for n in range(3000))
    headers = (
        f"From: {addresses}\r\nTo: {addresses}\r\nCc: {addresses}\r\nReply-To: {addresses}\r\n"
        f"Subject: {WIDE * 50_000}\r\nMessage-ID: <{WIDE * 5000}@x>\r\nIn-Reply-To: <{WIDE * 5000}@y>\r\n"
        f"References: {references}\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
    )
    text = "x" * (BODY_INLINE_LIMIT - 10)
    parts = f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
    parts += f"--b\r\nContent-Type: application/octet-stream; name={WIDE * 300}\r\n\r\nx\r\n" * 3000
    return (headers + parts + "--b--\r\n").encode()


def test_the_item_of_a_mail_with_every_field_far_over_its_cap_stays_under_dynamodbs_limit():
    mail = prepare_incoming(TARGET, "u" * 70, worst_mail()).mail

    item = DynamoMail("mail", blobs=MemoryBlobs())._item(mail)  # type: ignore[arg-type]

    assert len(mail.body_text) == BODY_INLINE_LIMIT - 10  # the body stayed in the item
    assert len(mail.to) == len(mail.cc) == len(mail.reply_to) == 100
    assert item_size(item) < DYNAMODB_ITEM_LIMIT
