"""Bounces read per recipient in each format and linked to the outgoing mail; auto-replies."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from mailcore.bounces import classify, mail_id_of
from mailcore.mime.build import new_message_id
from mailcore.models import Direction, Mail, MailStatus
from mailcore.services import pull
from mailcore.teams import ResolvedAccount

from tests.fakes import MemoryPublisher, memory_storage
from tests.support import mail_account, outgoing_mail

FIXTURES = Path(__file__).parent.parent / "fixtures" / "bounces"
NOW = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
TARGET = ResolvedAccount("t", "desk", mail_account())


def fixture(name: str, message_id: str = "<m1.0123456789abcdef@example.test>") -> bytes:
    return (FIXTURES / name).read_text().replace("{message_id}", message_id).replace("\n", "\r\n").encode()


def sent_mail(storage, to: list[str], team: str = "t") -> Mail:
    message_id = new_message_id("desk@example.test", "out1")
    mail = outgoing_mail(id="out1", team=team, status=MailStatus.SENT, to=to, message_id=message_id)
    storage.mail.put_new(mail)
    return mail


# ----------------------------------------------------------------------------- formats


def test_an_rfc3464_report_is_read_per_recipient_with_action_status_and_diagnostic():
    found = classify(fixture("rfc3464-two-recipients-one-delayed.eml"))
    assert found.original_message_id == "<m1.0123456789abcdef@example.test>"
    assert found.report == [
        {
            "recipient": "gone@customer.example",
            "action": "failed",
            "status": "5.1.1",
            "diagnostic": "550 5.1.1 <gone@customer.example>: Recipient address rejected: User unknown",
        },
        {
            "recipient": "slow@customer.example",
            "action": "delayed",
            "status": "4.4.1",
            "diagnostic": "451 4.4.1 Connection timed out",
        },
    ]


@pytest.mark.parametrize(
    ("name", "recipient", "status", "reply"),
    [
        (
            "exchange-online-ndr.eml",
            "nobody@fabrikam.example",
            "5.1.10",
            "550 5.1.10 RESOLVER.ADR.RecipientNotFound",
        ),
        ("gmail-address-not-found.eml", "no.such.person@gmail.com", "5.1.1", "550 5.1.1 The email account"),
        (
            "exim-mail-delivery-failed.eml",
            "old.contact@hoster.example",
            "5.1.1",
            "550 5.1.1 mailbox unavailable",
        ),
    ],
)
def test_non_standard_bounces_are_read_with_the_recipient_status_and_reply(name, recipient, status, reply):
    found = classify(fixture(name))
    assert found.original_message_id == "<m1.0123456789abcdef@example.test>"
    (entry,) = found.report
    assert entry["recipient"] == recipient and entry["action"] == "failed" and entry["status"] == status
    assert entry["diagnostic"].startswith(reply)


def test_a_plain_mail_mentioning_an_address_and_a_code_is_no_bounce():
    raw = b"From: a@example.test\r\nTo: desk@example.test\r\nSubject: Hello\r\n\r\nCall 550 1234, or b@example.test\r\n"
    assert not classify(raw).is_bounce


def test_the_mail_id_is_read_back_only_from_the_services_own_message_ids():
    assert mail_id_of(new_message_id("desk@example.test", "abc_1")) == "abc_1"
    assert mail_id_of("<0123456789abcdef0123456789abcdef@example.test>") is None
    assert mail_id_of(None) is None


# ----------------------------------------------------------------------------- linking


def pulled(storage, raw: bytes, uidl: str = "u1") -> Mail:
    stored = pull.store_incoming(TARGET, uidl, raw, storage=storage, now=NOW)
    assert stored is not None
    return stored


def test_a_bounce_pulled_is_linked_to_the_outgoing_mail_and_recorded_on_it():
    storage = memory_storage()
    outgoing = sent_mail(storage, ["Someone <nobody@fabrikam.example>"])
    bounce = pulled(storage, fixture("exchange-online-ndr.eml", outgoing.message_id))
    assert bounce.bounce_of == outgoing.id and bounce.auto_reply and bounce.direction == Direction.IN
    recorded = storage.mail.get(outgoing.id)
    assert recorded.status == MailStatus.BOUNCED
    (entry,) = recorded.bounces
    assert entry["recipient"] == "nobody@fabrikam.example" and entry["time"] == NOW.isoformat()


def test_a_delayed_notice_is_recorded_but_not_counted_as_a_bounce():
    storage = memory_storage()
    outgoing = sent_mail(storage, ["gone@customer.example", "slow@customer.example"])
    pulled(storage, fixture("rfc3464-two-recipients-one-delayed.eml", outgoing.message_id))
    recorded = storage.mail.get(outgoing.id)
    assert [entry["action"] for entry in recorded.bounces] == ["failed", "delayed"]
    assert recorded.status == MailStatus.SENT  # one recipient may still get it


def test_the_same_bounce_pulled_twice_is_recorded_once():
    storage = memory_storage()
    outgoing = sent_mail(storage, ["nobody@fabrikam.example"])
    raw = fixture("exchange-online-ndr.eml", outgoing.message_id)
    pulled(storage, raw)
    pull.store_incoming(TARGET, "u1", raw, storage=storage, now=NOW)
    assert len(storage.mail.get(outgoing.id).bounces) == 1


def test_a_pull_that_dies_after_recording_a_bounce_records_it_once_when_fetched_again():
    storage = memory_storage()
    outgoing = sent_mail(storage, ["nobody@fabrikam.example"])
    raw = fixture("exchange-online-ndr.eml", outgoing.message_id)
    put_new = storage.mail.put_new

    def dies(mail):
        raise ConnectionError("the pull was killed before the bounce's item was written")

    storage.mail.put_new = dies  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        pull.store_incoming(TARGET, "u1", raw, storage=storage, now=NOW)
    storage.mail.put_new = put_new  # type: ignore[method-assign]
    bounce = pulled(storage, raw)  # the next pull: the message was never stored, so it comes again
    (entry,) = storage.mail.get(outgoing.id).bounces
    assert entry["bounce"] == bounce.id and storage.mail.get(bounce.id) is not None


def test_a_bounce_naming_another_teams_mail_links_nothing():
    storage = memory_storage()
    outgoing = sent_mail(storage, ["nobody@fabrikam.example"], team="other")
    bounce = pulled(storage, fixture("exchange-online-ndr.eml", outgoing.message_id))
    assert bounce.bounce_of is None and bounce.bounces
    assert storage.mail.get(outgoing.id).status == MailStatus.SENT


def test_received_events_say_auto_reply_and_a_linked_bounce_puts_mail_bounced():
    events = MemoryPublisher()
    waiting = pull._ReceivedEvents(events, "t", "desk")
    storage = memory_storage()
    outgoing = sent_mail(storage, ["nobody@fabrikam.example"])
    bounce = pulled(storage, fixture("exchange-online-ndr.eml", outgoing.message_id))
    waiting.add(bounce)
    waiting.flush()
    received, bounced = events.events
    assert received.detail_type == "MailReceived" and received.extra["auto_reply"] is True
    assert bounced.detail_type == "MailBounced" and bounced.mail_id == outgoing.id
    assert (
        bounced.extra["failed"] == ["nobody@fabrikam.example"]
        and bounced.extra["bounce_mail_id"] == bounce.id
    )


# ----------------------------------------------------------------------------- auto-replies


@pytest.mark.parametrize(
    "header",
    [
        "Auto-Submitted: auto-replied",
        "Auto-Submitted: auto-generated",
        "X-Autoreply: yes",
        "X-Autorespond: Out of office",
        "Precedence: bulk",
        "Precedence: junk",
        "Precedence: list",
        "Subject: Out of Office: Your invoice",
        "Subject: Automatic reply: Your invoice",
        "Subject: Abwesenheitsnotiz",
    ],
)
def test_automatic_mail_is_marked_auto_reply(header):
    raw = f"From: a@example.test\r\nTo: desk@example.test\r\n{header}\r\n\r\nAway.\r\n".encode()
    assert classify(raw).auto_reply
    assert pulled(memory_storage(), raw).auto_reply


@pytest.mark.parametrize("header", ["Auto-Submitted: no", "Subject: Re: Your invoice", "Precedence: normal"])
def test_a_person_s_mail_is_not_an_auto_reply(header):
    raw = f"From: a@example.test\r\nTo: desk@example.test\r\n{header}\r\n\r\nThanks.\r\n".encode()
    assert not classify(raw).auto_reply


def test_a_report_of_thousands_of_recipients_keeps_the_first_hundred_entries():
    # Each entry lands on the bounce and on its outgoing mail: both stay far under 400 KB.
    blocks = "".join(
        f"\r\nFinal-Recipient: rfc822; r{n}@customer.example\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        for n in range(3000)
    )
    raw = (
        "From: MAILER-DAEMON@example.test\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n'
        "\r\n--b\r\nContent-Type: text/plain\r\n\r\nnot delivered\r\n"
        f"--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; example.test\r\n{blocks}"
        "\r\n--b--\r\n"
    ).encode()
    found = classify(raw)
    assert found.is_bounce and len(found.report) == 100
    assert found.report[0]["recipient"] == "r0@customer.example"


def test_a_bounce_set_aside_unparsed_is_still_linked_to_its_outgoing_mail():
    storage = memory_storage()
    outgoing = sent_mail(storage, ["Someone <nobody@fabrikam.example>"])
    raw = fixture("exchange-online-ndr.eml", outgoing.message_id)
    aside = pull.set_aside(TARGET, "u1", raw, reason="over its parse budget", now=NOW)
    stored = pull.write_incoming(aside, storage)
    assert stored is not None and stored.bounce_of == outgoing.id and stored.parse_error
    assert storage.mail.get(outgoing.id).status == MailStatus.BOUNCED
