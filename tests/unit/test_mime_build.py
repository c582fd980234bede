import email
import email.policy
from datetime import UTC, datetime, timedelta, timezone
from email.message import EmailMessage

import pytest
from mailcore.mime import OutgoingAttachment, build_message, new_message_id, parse_message

DATE = datetime(2026, 11, 24, 9, 30, 0, tzinfo=UTC)


def build(**overrides) -> EmailMessage:
    fields = {
        "mail_from": "Sender <sender@example.test>",
        "to": ["to@example.test"],
        "cc": [],
        "reply_to": [],
        "subject": "Hello",
        "body_text": "Hello there.",
        "body_html": None,
        "attachments": [],
        "message_id": "<abc123@example.test>",
        "date": DATE,
    }
    return build_message(**(fields | overrides))


def wire(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=email.policy.SMTP)


def reread(msg: EmailMessage) -> EmailMessage:
    """The message as a receiver's parser sees it (with LF line ends, so get_content() reads simply)."""
    parsed = email.message_from_bytes(wire(msg).replace(b"\r\n", b"\n"), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def header_block(msg: EmailMessage) -> bytes:
    return wire(msg).split(b"\r\n\r\n", 1)[0]


PDF = OutgoingAttachment("report.pdf", "application/pdf", b"%PDF-1.4 data")


# --- structure ----------------------------------------------------------------------------------


def test_text_only_mail_is_a_single_text_plain_part():
    msg = reread(build(body_text="Just text."))

    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert msg.get_content().rstrip("\n") == "Just text."


def test_text_and_html_make_multipart_alternative_with_text_first():
    msg = reread(build(body_text="Plain.", body_html="<p>Rich.</p>"))

    assert msg.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in msg.iter_parts()] == ["text/plain", "text/html"]


def test_html_only_mail_gets_a_text_alternative_derived_from_the_html():
    msg = reread(build(body_text=None, body_html="<h1>Title</h1><p>Some <b>rich</b> text.</p>"))

    assert msg.get_content_type() == "multipart/alternative"
    text, html = msg.iter_parts()
    assert text.get_content().strip() == "Title\n\nSome rich text."
    assert html.get_content().strip() == "<h1>Title</h1><p>Some <b>rich</b> text.</p>"


def test_attachments_wrap_the_body_and_each_file_in_multipart_mixed():
    other = OutgoingAttachment("data.csv", "text/csv", b"a,b\n1,2\n")
    msg = reread(build(body_text="Plain.", body_html="<p>Rich.</p>", attachments=[PDF, other]))

    assert msg.get_content_type() == "multipart/mixed"
    body, pdf, csv = msg.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert (pdf.get_content_type(), pdf.get_content()) == ("application/pdf", PDF.data)
    assert (csv.get_content_type(), csv.get_payload(decode=True)) == ("text/csv", b"a,b\n1,2\n")


def test_attachment_has_attachment_disposition_and_its_filename():
    _, pdf = reread(build(attachments=[PDF])).iter_parts()

    assert pdf.get_content_disposition() == "attachment"
    assert pdf.get_filename() == "report.pdf"


def test_only_the_top_of_the_message_has_a_mime_version():
    msg = reread(build(body_html="<p>Rich.</p>", attachments=[PDF]))

    assert msg["MIME-Version"] == "1.0"
    assert all("MIME-Version" not in part for part in msg.walk() if part is not msg)


@pytest.mark.parametrize("content_type", ["", "pdf", "text/", "/plain", "a b/c", "text/plain; charset=x"])
def test_invalid_or_empty_attachment_content_type_is_sent_as_octet_stream(content_type):
    attachment = OutgoingAttachment("file.bin", content_type, b"\x00\x01")
    _, part = reread(build(attachments=[attachment])).iter_parts()

    assert part.get_content_type() == "application/octet-stream"


@pytest.mark.parametrize("content_type", ["message/rfc822", "multipart/mixed"])
def test_attachment_of_a_structured_type_is_sent_as_opaque_octet_stream(content_type):
    attachment = OutgoingAttachment("forward.eml", content_type, b"Subject: x\r\n\r\nbody\r\n")
    _, part = reread(build(attachments=[attachment])).iter_parts()

    assert part.get_content_type() == "application/octet-stream"
    assert part.get_content() == attachment.data


def test_empty_attachment_filename_gets_a_generated_name():
    attachment = OutgoingAttachment("  ", "application/pdf", b"%PDF")
    _, part = reread(build(attachments=[attachment])).iter_parts()

    assert part.get_filename() == "attachment-1"


# --- encodings ----------------------------------------------------------------------------------


def test_non_ascii_subject_is_rfc2047_encoded():
    msg = build(subject="Grüße aus Köln €")

    assert b"=?utf-8?" in header_block(msg)
    assert reread(msg)["Subject"] == "Grüße aus Köln €"


def test_non_ascii_display_names_are_rfc2047_encoded():
    msg = build(mail_from="Jöhn Dö <j@example.test>", to=["Zoë <z@example.test>"])

    block = header_block(msg)
    assert block.isascii()
    assert b"From: =?utf-8?" in block
    assert str(reread(msg)["From"]) == "Jöhn Dö <j@example.test>"
    assert str(reread(msg)["To"]) == "Zoë <z@example.test>"


def test_non_ascii_attachment_filename_is_rfc2231_encoded():
    attachment = OutgoingAttachment("Grüße €.pdf", "application/pdf", b"%PDF")
    msg = build(attachments=[attachment])

    assert b"filename*=utf-8''Gr%C3%BC%C3%9Fe%20%E2%82%AC.pdf" in wire(msg)
    _, part = reread(msg).iter_parts()
    assert part.get_filename() == "Grüße €.pdf"


def test_long_non_ascii_attachment_filename_survives_folding():
    name = "Ünïcödé " * 20 + ".pdf"
    _, part = reread(build(attachments=[OutgoingAttachment(name, "application/pdf", b"%PDF")])).iter_parts()

    assert part.get_filename() == name


def test_short_ascii_text_is_sent_as_7bit():
    msg = build(body_text="Plain ASCII.")

    assert msg["Content-Transfer-Encoding"] == "7bit"


def test_non_ascii_text_is_transfer_encoded_so_the_mail_stays_7bit():
    msg = build(body_text="Grüße " * 50, body_html="<p>" + "東京 " * 50 + "</p>")

    assert wire(msg).isascii()
    text, html = reread(msg).iter_parts()
    assert text["Content-Transfer-Encoding"] in ("quoted-printable", "base64")
    assert text.get_content().strip() == ("Grüße " * 50).strip()
    assert html.get_content().strip() == "<p>" + "東京 " * 50 + "</p>"


def test_serialises_with_crlf_line_endings_only():
    raw = wire(build(body_text="one\ntwo\r\nthree\n", body_html="<p>x</p>\n<p>y</p>", attachments=[PDF]))

    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert b"\r" not in raw.replace(b"\r\n", b"")


@pytest.mark.parametrize("field", ["body_text", "body_html"])
def test_a_5000_character_line_serialises_in_lines_of_at_most_998(field):
    long_line = "x" * 2500 + "€" + "y" * 2499
    msg = build(**{field: long_line})

    raw = wire(msg)
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert long_line in parse_message(raw).body_text + parse_message(raw).body_html


# --- headers ------------------------------------------------------------------------------------


def test_message_id_date_and_mime_version_headers_are_set():
    msg = reread(build(message_id="<id-1@example.test>"))

    assert msg["Message-ID"] == "<id-1@example.test>"
    assert msg["Date"] == "Tue, 24 Nov 2026 09:30:00 +0000"
    assert msg["MIME-Version"] == "1.0"


def test_date_keeps_the_offset_of_the_given_datetime():
    berlin_winter = timezone(timedelta(hours=1))
    msg = reread(build(date=datetime(2026, 11, 24, 10, 30, tzinfo=berlin_winter)))

    assert msg["Date"] == "Tue, 24 Nov 2026 10:30:00 +0100"


def test_naive_date_is_rejected():
    with pytest.raises(ValueError, match="timezone"):
        build(date=datetime(2026, 11, 24, 9, 30))


def test_recipients_and_reply_to_are_listed_in_their_headers():
    msg = reread(
        build(
            to=["a@example.test", '"Doe, Jane" <jane@example.test>'],
            cc=["c@example.test"],
            reply_to=["Desk <desk@example.test>"],
        )
    )

    assert [str(a) for a in msg["To"].addresses] == ["a@example.test", '"Doe, Jane" <jane@example.test>']
    assert str(msg["Cc"]) == "c@example.test"
    assert str(msg["Reply-To"]) == "Desk <desk@example.test>"


def test_empty_to_cc_and_reply_to_leave_their_headers_out():
    msg = reread(build(to=[], cc=[], reply_to=[]))

    assert "To" not in msg and "Cc" not in msg and "Reply-To" not in msg


def test_bcc_is_never_a_header():
    raw = wire(build(to=[], cc=["c@example.test"]))

    assert b"\r\nbcc:" not in raw.lower()


def test_in_reply_to_and_references_are_set_when_given():
    msg = reread(
        build(
            in_reply_to="<parent@example.test>", references=["<root@example.test>", "<parent@example.test>"]
        )
    )

    assert msg["In-Reply-To"] == "<parent@example.test>"
    assert msg["References"] == "<root@example.test> <parent@example.test>"


def test_in_reply_to_and_references_are_absent_when_not_given():
    msg = reread(build())

    assert "In-Reply-To" not in msg and "References" not in msg


@pytest.mark.parametrize(
    "overrides",
    [
        {"mail_from": "a@example.test\r\nBcc: victim@example.test"},
        {"to": ["a@example.test\nBcc: victim@example.test"]},
        {"cc": ["a@example.test\r"]},
        {"reply_to": ["a@example.test\n"]},
        {"subject": "Hi\r\nBcc: victim@example.test"},
        {"message_id": "<a@b>\r\nX: y"},
        {"in_reply_to": "<a@b>\nX: y"},
        {"references": ["<a@b>", "<c@d>\r\nX: y"]},
        {"attachments": [OutgoingAttachment("a.pdf\r\nX: y", "application/pdf", b"")]},
        {"attachments": [OutgoingAttachment("a.pdf", "application/pdf\nX: y", b"")]},
    ],
    ids=lambda overrides: next(iter(overrides)),
)
def test_header_values_with_cr_or_lf_are_rejected(overrides):
    with pytest.raises(ValueError, match="CR"):
        build(**overrides)


def test_built_mail_reads_back_the_same_through_parse_message():
    attachment = OutgoingAttachment("Grüße.pdf", "application/pdf", bytes(range(256)))
    raw = wire(
        build(
            mail_from="Jöhn Dö <j@example.test>",
            to=["Zoë <z@example.test>", "b@example.test"],
            cc=["c@example.test"],
            reply_to=["r@example.test"],
            subject="Grüße \u2013 Re: Angebot",
            body_text="Hallo Zoë,\nanbei das Angebot.\n",
            body_html="<p>Hallo Zoë,<br>anbei das <b>Angebot</b>.</p>",
            attachments=[attachment],
            message_id="<m1@example.test>",
            in_reply_to="<p1@example.test>",
            references=["<r1@example.test>", "<p1@example.test>"],
        )
    )

    mail = parse_message(raw)

    assert mail.from_ == "Jöhn Dö <j@example.test>"
    assert mail.to == ["Zoë <z@example.test>", "b@example.test"]
    assert mail.cc == ["c@example.test"]
    assert mail.reply_to == ["r@example.test"]
    assert mail.subject == "Grüße \u2013 Re: Angebot"
    assert mail.date == DATE
    assert mail.message_id == "<m1@example.test>"
    assert mail.in_reply_to == "<p1@example.test>"
    assert mail.references == ["<r1@example.test>", "<p1@example.test>"]
    assert mail.body_text == "Hallo Zoë,\nanbei das Angebot.\n"
    assert mail.body_html.strip() == "<p>Hallo Zoë,<br>anbei das <b>Angebot</b>.</p>"
    assert [(a.filename, a.content_type, a.data) for a in mail.attachments] == [
        ("Grüße.pdf", "application/pdf", attachment.data)
    ]


# --- message ids --------------------------------------------------------------------------------


def test_new_message_id_is_random_at_the_domain_of_the_sender():
    message_id = new_message_id("Jöhn Dö <j@Example.TEST>")

    assert message_id.startswith("<") and message_id.endswith("@example.test>")
    assert len(message_id.split("@")[0]) > 20


def test_new_message_ids_are_unique():
    assert len({new_message_id("a@example.test") for _ in range(1000)}) == 1000


def test_new_message_id_of_an_internationalised_domain_uses_its_ascii_form():
    assert new_message_id("a@bücher.example").endswith("@xn--bcher-kva.example>")


@pytest.mark.parametrize(
    "mail_from", ["", "nobody", "Name <>", "a@", "a@bad_domain.test", "a@-x-.test", "a@[1.2.3.4"]
)
def test_new_message_id_falls_back_to_mail_invalid_without_a_usable_domain(mail_from):
    assert new_message_id(mail_from).endswith("@mail.invalid>")


def test_new_message_id_builds_a_valid_header():
    message_id = new_message_id("a@example.test")

    assert reread(build(message_id=message_id))["Message-ID"] == message_id


def test_only_mail_built_as_auto_generated_carries_auto_submitted():
    assert reread(build(auto_generated=True))["Auto-Submitted"] == "auto-generated"
    assert reread(build())["Auto-Submitted"] is None
