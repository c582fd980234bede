import base64
import random
import sysconfig
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from mailcore.mime import parse_message

DATA = Path(__file__).parent / "data" / "mime"
# CPython's own test messages, when the interpreter ships its test suite (not copied into the repo).
CPYTHON_EMAIL_DATA = Path(sysconfig.get_paths()["stdlib"]) / "test" / "test_email" / "data"


def crlf(text: str | bytes) -> bytes:
    """A message written with LF line ends in the test, as it comes over the wire."""
    data = text.encode("utf-8") if isinstance(text, str) else text
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def simple(headers: str = "", body: bytes = b"Hello.\n", content_type: str = "text/plain") -> bytes:
    return crlf(
        f"From: a@example.test\nTo: b@example.test\nSubject: test\n{headers}"
        f"MIME-Version: 1.0\nContent-Type: {content_type}\n\n".encode()
        + body
    )


BODY_PART = "Content-Type: text/plain\n\nBody."


def mixed(*parts: str, end: str = "--B--\n") -> bytes:
    """A multipart/mixed message (boundary B) of `parts`, each its headers, a blank line and its body."""
    return crlf(
        "Content-Type: multipart/mixed; boundary=B\n\n" + "".join(f"--B\n{part}\n" for part in parts) + end
    )


def text_in(charset: str, body: bytes) -> str:
    return parse_message(simple(body=body, content_type=f"text/plain; charset={charset}")).body_text


# --- headers ------------------------------------------------------------------------------------

FULL = crlf("""\
From: Anne Person <anne@example.test>
To: Bob <bob@example.test>, carol@example.test
Cc: "Doe, Dan" <dan@example.test>
Reply-To: desk@example.test
Subject: Quarterly numbers
Date: Tue, 24 Nov 2026 09:30:00 +0100
Message-ID: <m2@example.test>
In-Reply-To: <m1@example.test>
References: <m0@example.test>
 <m1@example.test>

Body.
""")


def test_address_headers_become_name_and_address_strings():
    mail = parse_message(FULL)

    assert mail.from_ == "Anne Person <anne@example.test>"
    assert mail.to == ["Bob <bob@example.test>", "carol@example.test"]
    assert mail.cc == ['"Doe, Dan" <dan@example.test>']
    assert mail.reply_to == ["desk@example.test"]


def test_subject_date_and_message_ids_are_read():
    mail = parse_message(FULL)

    assert mail.subject == "Quarterly numbers"
    assert mail.date == datetime(2026, 11, 24, 9, 30, tzinfo=timezone(timedelta(hours=1)))
    assert mail.message_id == "<m2@example.test>"
    assert mail.in_reply_to == "<m1@example.test>"


def test_references_lists_every_message_id_across_folded_lines():
    assert parse_message(FULL).references == ["<m0@example.test>", "<m1@example.test>"]


def test_rfc2047_subject_and_display_names_are_decoded():
    raw = crlf("""\
From: =?utf-8?q?J=C3=B6hn_D=C3=B6?= <j@example.test>
To: =?iso-8859-1?q?Zo=EB?= <z@example.test>
Subject: =?utf-8?B?R3LDvMOfZSDigqw=?= und =?utf-8?q?mehr?=

x
""")
    mail = parse_message(raw)

    assert mail.from_ == "Jöhn Dö <j@example.test>"
    assert mail.to == ["Zoë <z@example.test>"]
    assert mail.subject == "Grüße € und mehr"


def test_raw_utf8_header_bytes_are_decoded_as_utf8():
    raw = crlf("From: Zoë <z@example.test>\nSubject: Grüße €\n\nx\n")

    mail = parse_message(raw)

    assert (mail.from_, mail.subject) == ("Zoë <z@example.test>", "Grüße €")


def test_raw_8bit_header_bytes_that_are_not_utf8_are_decoded_as_windows_1252():
    raw = crlf(b"From: M\xfcller <m@example.test>\nSubject: 10 \x80 \x93g\xfcnstig\x94\n\nx\n")

    mail = parse_message(raw)

    assert (mail.from_, mail.subject) == ("Müller <m@example.test>", "10 € “günstig”")


def test_first_of_repeated_headers_counts():
    raw = crlf("Subject: first\nSubject: second\n\nx\n")

    assert parse_message(raw).subject == "first"


def test_date_without_zone_is_taken_as_utc():
    raw = simple("Date: Tue, 24 Nov 2026 09:30:00\n")

    assert parse_message(raw).date == datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def test_unparsable_date_is_none():
    assert parse_message(simple("Date: the 31st of Smarch\n")).date is None


def test_missing_message_id_and_date_are_none():
    mail = parse_message(simple())

    assert (mail.message_id, mail.date, mail.in_reply_to, mail.references) == (None, None, None, [])


def test_message_id_without_angle_brackets_is_kept_as_in_the_header():
    assert parse_message(simple("Message-ID: abc@example.test\n")).message_id == "abc@example.test"


def test_address_header_that_does_not_parse_falls_back_to_its_raw_text():
    raw = simple("Cc: John Doe john@example.test, <unterminated@example.test\n")

    assert parse_message(raw).cc == ["John Doe john@example.test, <unterminated@example.test"]


def test_unbalanced_quote_in_from_falls_back_to_the_raw_text():
    raw = crlf('From: "Unbalanced <quote@example.test>\n\nx\n')

    assert parse_message(raw).from_ == '"Unbalanced <quote@example.test>'


def test_undisclosed_recipients_group_gives_no_addresses():
    assert parse_message(simple("Cc: undisclosed-recipients:;\n")).cc == []


def test_display_name_in_an_unknown_charset_keeps_the_address():
    raw = simple("Cc: =?x-unknown?q?Caf=E9?= <cafe@example.test>\n")

    assert parse_message(raw).cc == ["Café <cafe@example.test>"]


def test_missing_address_headers_give_empty_values():
    mail = parse_message(crlf("Subject: x\n\nbody\n"))

    assert (mail.from_, mail.to, mail.cc, mail.reply_to) == ("", [], [], [])


# --- charsets -----------------------------------------------------------------------------------


def test_iso_8859_1_label_is_decoded_as_windows_1252():
    assert text_in("iso-8859-1", b"10 \x80 \x96 \x93quoted\x94 caf\xe9") == "10 € \u2013 “quoted” café"


@pytest.mark.parametrize("label", ["ISO-8859-1", "latin1", "latin-1", '"iso_8859-1"', "l1"])
def test_latin_1_aliases_are_decoded_as_windows_1252(label):
    assert text_in(label, b"\x80") == "€"


def test_us_ascii_label_with_8bit_bytes_is_decoded_as_windows_1252():
    assert text_in("us-ascii", b"caf\xe9 \x80") == "café €"


def test_us_ascii_label_with_utf8_bytes_is_decoded_as_utf8():
    assert text_in("us-ascii", "café €".encode()) == "café €"


def test_missing_charset_label_reads_utf8_then_windows_1252():
    utf8 = parse_message(simple(body="café".encode())).body_text
    cp1252 = parse_message(simple(body=b"caf\xe9")).body_text

    assert (utf8, cp1252) == ("café", "café")


def test_unknown_charset_label_tries_utf8_first():
    assert text_in("x-unknown", "Grüße €".encode()) == "Grüße €"


def test_unknown_charset_label_falls_back_to_windows_1252():
    assert text_in("x-unknown", b"Gr\xfc\xdfe \x80") == "Grüße €"


def test_known_charset_label_is_used():
    assert text_in("koi8-r", "Привет".encode("koi8-r")) == "Привет"


def test_gb2312_label_is_decoded_as_its_gb18030_superset():
    assert text_in("gb2312", "镕".encode("gb18030")) == "镕"


@pytest.mark.parametrize("label", ["unicode_escape", "rot13", "base64", "idna"])
def test_codec_names_that_are_no_charsets_are_treated_as_unknown(label):
    assert text_in(label, b"\\x41 caf\xe9") == "\\x41 café"


def test_undecodable_bytes_in_labelled_utf8_become_replacement_characters():
    assert text_in("utf-8", b"ok \xff\xfe end") == "ok \ufffd\ufffd end"


def test_utf8_byte_order_mark_is_dropped():
    assert text_in("utf-8", b"\xef\xbb\xbfHello") == "Hello"


def test_nuls_are_stripped_from_text():
    raw = crlf(b"Subject: a\x00b\n\nbo\x00dy\n")

    mail = parse_message(raw)

    assert (mail.subject, mail.body_text) == ("ab", "body\n")


def test_body_text_has_lf_line_ends():
    assert parse_message(simple(body=b"one\r\ntwo\rthree\n")).body_text == "one\ntwo\nthree\n"


def test_quoted_printable_body_is_decoded():
    raw = simple("Content-Transfer-Encoding: quoted-printable\n", b"Gr=C3=BC=C3=9Fe, a soft=\nbreak\n")

    assert parse_message(raw).body_text == "Grüße, a softbreak\n"


# --- bodies -------------------------------------------------------------------------------------

NESTED = crlf(b"""\
From: a@example.test
Subject: nested
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=OUT

--OUT
Content-Type: multipart/alternative; boundary=ALT

--ALT
Content-Type: text/plain; charset=utf-8

Plain body.
--ALT
Content-Type: multipart/related; boundary=REL

--REL
Content-Type: text/html; charset=utf-8

<p>HTML body <img src="cid:logo@example.test"></p>
--REL
Content-Type: image/png
Content-ID: <logo@example.test>
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--REL--
--ALT--
--OUT
Content-Type: text/plain; charset=utf-8
Content-Disposition: attachment; filename="notes.txt"

Attached notes.
--OUT
Content-Type: application/pdf
Content-Disposition: attachment; filename="report.pdf"
Content-ID: <pdf@example.test>
Content-Transfer-Encoding: base64

JVBERi0xLjQ=
--OUT--
""")


def test_first_text_and_html_parts_of_nested_multiparts_are_the_bodies():
    mail = parse_message(NESTED)

    assert mail.body_text == "Plain body."
    assert mail.body_html == '<p>HTML body <img src="cid:logo@example.test"></p>'


def test_parts_that_are_not_the_body_are_attachments_in_mail_order():
    mail = parse_message(NESTED)

    assert [(a.filename, a.content_type) for a in mail.attachments] == [
        ("attachment-1.png", "image/png"),
        ("notes.txt", "text/plain"),
        ("report.pdf", "application/pdf"),
    ]


def test_inline_image_in_a_related_part_is_an_inline_attachment_with_its_content_id():
    image = parse_message(NESTED).attachments[0]

    assert (image.inline, image.content_id, image.data) == (True, "logo@example.test", b"\x89PNG\r\n\x1a\n")


def test_text_part_with_attachment_disposition_is_an_attachment():
    notes = parse_message(NESTED).attachments[1]

    assert (notes.data, notes.inline) == (b"Attached notes.", False)


def test_attachment_with_a_content_id_and_attachment_disposition_is_not_inline():
    pdf = parse_message(NESTED).attachments[2]

    assert (pdf.inline, pdf.content_id, pdf.data) == (False, "pdf@example.test", b"%PDF-1.4")


def test_text_part_with_a_filename_but_no_disposition_is_an_attachment():
    raw = mixed(BODY_PART, 'Content-Type: text/plain; name="data.txt"\n\nData.')
    mail = parse_message(raw)

    assert mail.body_text == "Body."
    assert [(a.filename, a.data) for a in mail.attachments] == [("data.txt", b"Data.")]


def test_second_body_text_part_is_kept_as_an_attachment():
    raw = mixed("Content-Type: text/plain\n\nFirst.", "Content-Type: text/plain\n\nSecond.")
    mail = parse_message(raw)

    assert mail.body_text == "First."
    assert [(a.filename, a.data) for a in mail.attachments] == [("attachment-1.txt", b"Second.")]


def test_html_body_is_sanitized():
    raw = simple(body=b'<p onclick="x()">Hi<script>alert(1)</script></p>', content_type="text/html")

    assert parse_message(raw).body_html == "<p>Hi</p>"


def test_html_only_mail_gets_a_text_body_derived_from_the_html():
    raw = simple(
        body=b"<h1>News</h1><p>Read <a href='https://x.test/'>this</a>.</p>", content_type="text/html"
    )

    assert parse_message(raw).body_text == "News\n\nRead this (https://x.test/)."


def test_text_only_mail_has_an_empty_html_body():
    assert parse_message(simple()).body_html == ""


def test_html_without_mime_charset_uses_its_meta_charset():
    body = b'<html><head><meta charset="windows-1251"></head><body>\xcf\xf0\xe8\xe2\xe5\xf2</body></html>'

    assert parse_message(simple(body=body, content_type="text/html")).body_text == "Привет"


def test_multipart_without_a_boundary_is_shown_as_text():
    raw = simple(body=b"Some text.\n", content_type="multipart/mixed")

    assert parse_message(raw).body_text == "Some text.\n"


def test_truncated_multipart_keeps_the_parts_that_arrived():
    pdf = "Content-Type: application/pdf; name=cut.pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0xLjQgYWJj"
    raw = mixed(BODY_PART, pdf, end="")
    mail = parse_message(raw)

    assert mail.body_text == "Body."
    assert [(a.filename, a.data[:8]) for a in mail.attachments] == [("cut.pdf", b"%PDF-1.4")]


# --- filenames ----------------------------------------------------------------------------------


def attachment_named(disposition: str, content_type: str = "application/pdf") -> str:
    raw = mixed(BODY_PART, f"Content-Type: {content_type}\nContent-Disposition: {disposition}\n\ndata")
    return parse_message(raw).attachments[0].filename


def test_rfc2231_filename_is_decoded():
    assert attachment_named("attachment; filename*=utf-8''%E2%82%AC.pdf") == "€.pdf"


def test_rfc2231_filename_in_several_sections_is_joined():
    disposition = "attachment;\n filename*0*=utf-8''Gr%C3%BC%C3%9Fe;\n filename*1=\" aus K\";\n filename*2*=%C3%B6ln.pdf"

    assert attachment_named(disposition) == "Grüße aus Köln.pdf"


def test_rfc2047_encoded_filename_in_a_quoted_parameter_is_decoded():
    assert attachment_named('attachment; filename="=?UTF-8?Q?Gr=C3=BC=C3=9Fe.pdf?="') == "Grüße.pdf"


def test_content_type_name_parameter_is_the_filename_when_disposition_has_none():
    assert (
        attachment_named("attachment", content_type='application/pdf; name="from-type.pdf"')
        == "from-type.pdf"
    )


@pytest.mark.parametrize(
    ("content_type", "expected"),
    [
        ("application/pdf", "attachment-1.pdf"),
        ("image/png", "attachment-1.png"),
        ("application/x-nobody-knows", "attachment-1.bin"),
    ],
)
def test_missing_filename_gets_a_numbered_name_with_an_extension_for_its_type(content_type, expected):
    assert attachment_named("attachment", content_type=content_type) == expected


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\\\Users\\\\me\\\\evil.exe", "evil.exe"),
        ("bad\\x01name\\x7f.pdf", "badname.pdf"),
        ("invoice\\u202egpj.exe", "invoicegpj.exe"),
        ("..", "attachment-1.pdf"),
    ],
)
def test_path_separators_and_control_characters_are_removed_from_filenames(filename, expected):
    encoded = filename.encode().decode("unicode_escape").encode("utf-8").hex("%").upper()
    assert attachment_named(f"attachment; filename*=utf-8''%{encoded}") == expected


# --- embedded messages --------------------------------------------------------------------------

FORWARD = crlf("""\
From: fwd@example.test
Subject: Fwd: Plans
Content-Type: multipart/mixed; boundary=F

--F
Content-Type: text/plain

See the forwarded mail.
--F
Content-Type: message/rfc822

From: orig@example.test
Subject: Plans
Content-Type: multipart/alternative; boundary=G

--G
Content-Type: text/plain

Inner text.
--G
Content-Type: text/html

<p>Inner html.</p>
--G--

--F--
""")


def test_message_rfc822_part_is_one_attachment_named_after_its_subject():
    mail = parse_message(FORWARD)

    assert [(a.filename, a.content_type, a.inline) for a in mail.attachments] == [
        ("Plans.eml", "message/rfc822", False)
    ]


def test_embedded_message_body_is_not_merged_into_the_outer_body():
    mail = parse_message(FORWARD)

    assert (mail.body_text, mail.body_html) == ("See the forwarded mail.", "")


def test_embedded_message_attachment_holds_the_whole_message():
    inner = parse_message(parse_message(FORWARD).attachments[0].data)

    assert (inner.from_, inner.subject, inner.body_text, inner.body_html) == (
        "orig@example.test",
        "Plans",
        "Inner text.",
        "<p>Inner html.</p>",
    )


def test_embedded_message_without_subject_gets_a_numbered_eml_name():
    raw = FORWARD.replace(b"Subject: Plans\r\n", b"")

    assert parse_message(raw).attachments[0].filename == "attachment-1.eml"


def test_base64_encoded_embedded_message_is_decoded():
    inner = b"From: inner@example.test\r\nSubject: Inner\r\n\r\nInner body.\r\n"
    raw = crlf(
        b"Content-Type: multipart/mixed; boundary=F\n\n--F\nContent-Type: text/plain\n\nOuter.\n"
        b"--F\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
        + base64.encodebytes(inner)
        + b"--F--\n"
    )
    attachment = parse_message(raw).attachments[0]

    assert (attachment.filename, attachment.data) == ("Inner.eml", inner)


# --- robustness ---------------------------------------------------------------------------------


def test_content_type_that_breaks_the_stdlib_header_parser_does_not_lose_the_mail():
    raw = simple(body=b"Still here.\n", content_type="text/plain; charset*")

    mail = parse_message(raw)

    assert (mail.subject, mail.body_text) == ("test", "Still here.\n")


def test_deeply_nested_multiparts_that_exhaust_the_stdlib_parser_keep_headers_and_text():
    raw = b"Subject: deep\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n" + b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(3000)
    )

    mail = parse_message(raw)

    assert mail.subject == "deep"
    assert mail.body_text.startswith("--b0\nContent-Type: multipart/mixed; boundary=b1\n")


@pytest.mark.parametrize("raw", [b"", b"\r\n", b"\x00" * 100, b"\xff\xfe\xfd", b":", b"From:", b"--\r\n--"])
def test_degenerate_input_does_not_raise(raw):
    assert isinstance(parse_message(raw).body_text, str)


def test_mutated_and_truncated_messages_never_raise():
    seeds = [FULL, NESTED, FORWARD, *(path.read_bytes() for path in sorted(DATA.glob("*.eml")))]
    junk = [b"\x00", b"\r\n", b"\n\n", b"--", b"=?", b"?=", b"=?x-unknown?q?=FF?=", b"<", b">", b'"', b";",
            b"charset*", b"filename*0*=", b"boundary=", b"\x80\xff", b"Content-Type: message/rfc822\r\n\r\n",
            b"Content-Transfer-Encoding: base64\r\n", b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"]  # fmt: skip
    rng = random.Random(20261124)
    for _ in range(600):
        raw = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(raw) + 1)
            action = rng.randrange(4)
            if action == 0:
                raw[at:at] = rng.choice(junk)
            elif action == 1:
                del raw[at : at + rng.randint(1, 40)]
            elif action == 2 and raw:
                raw[at % len(raw)] = rng.randrange(256)
            else:
                raw = raw[:at]
        mail = parse_message(bytes(raw))
        assert isinstance(mail.body_text, str) and isinstance(mail.body_html, str)


@pytest.mark.parametrize("path", sorted(DATA.glob("*.eml")), ids=lambda path: path.name)
def test_awkward_sample_message_parses(path):
    mail = parse_message(path.read_bytes())

    assert mail.body_text or mail.attachments


def test_sample_latin1_labelled_windows_1252_mail_reads_right():
    mail = parse_message((DATA / "latin1_label_cp1252_bytes.eml").read_bytes())

    assert mail.subject == "Preis: 10 € “günstig”"
    assert "nur 10 € \u2013 “jetzt” zugreifen…" in mail.body_text


def test_sample_newsletter_has_no_tracking_pixel_or_form():
    mail = parse_message((DATA / "html_only_newsletter.eml").read_bytes())

    assert "pixel.gif" not in mail.body_html and "<form" not in mail.body_html
    assert mail.body_text == "Nur heute: 20 € Rabatt\n\nJetzt einkaufen (https://letter.example/c?u=1)."


CPYTHON_MESSAGES = sorted(CPYTHON_EMAIL_DATA.glob("msg_*.txt")) if CPYTHON_EMAIL_DATA.is_dir() else []


@pytest.mark.skipif(not CPYTHON_MESSAGES, reason="CPython's test_email data is not on this machine")
def test_every_cpython_test_email_message_parses():
    for path in CPYTHON_MESSAGES:
        mail = parse_message(path.read_bytes())
        assert isinstance(mail.body_text, str), path.name
