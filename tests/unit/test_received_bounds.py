"""Received mail within the caps of docs/received-mail-limits.md, whatever the mail holds."""

from mailcore.mime import parse_message
from mailcore.mime.parse import (
    CUT_MARK,
    MAX_ADDRESS_BYTES,
    MAX_ATTACHMENTS,
    MAX_RECIPIENTS,
    MAX_REFERENCES,
    MAX_SUBJECT_BYTES,
)
from mailcore.sanitize import MAX_FORMATTING, MAX_HTML_CHARS, MAX_HTML_DEPTH, safe_html

from bench import hostile_shapes


def _mail(headers: str, body: str = "hello") -> bytes:
    return f"From: a@example.test\r\n{headers}\r\nContent-Type: text/plain\r\n\r\n{body}\r\n".encode()


def test_a_subject_of_thousands_of_encoded_words_is_decoded_only_up_to_a_length_and_marked():
    mail = parse_message(hostile_shapes.encoded_word_subject(200_000))

    assert mail.subject.startswith("w0w1w2")
    assert mail.subject.endswith(CUT_MARK)
    assert len(mail.subject.encode()) <= MAX_SUBJECT_BYTES


def test_a_long_recipient_list_keeps_the_first_addresses_and_says_how_many_it_had():
    addresses = ", ".join(f"Person {n} <p{n}@example.test>" for n in range(MAX_RECIPIENTS + 50))

    mail = parse_message(_mail(f"To: {addresses}"))

    assert mail.to[:2] == ["Person 0 <p0@example.test>", "Person 1 <p1@example.test>"]
    assert len(mail.to) == MAX_RECIPIENTS
    assert f"to: {MAX_RECIPIENTS} of {MAX_RECIPIENTS + 50} kept" in mail.cut


def test_a_long_address_list_is_split_at_top_level_commas_only():
    names = ", ".join(f'"Doe, Jane {n}" <j{n}@example.test> (desk, {n})' for n in range(20))

    mail = parse_message(_mail(f"Cc: {names}"))

    assert mail.cc[0] == '"Doe, Jane 0" <j0@example.test>'
    assert len(mail.cc) == 20


def test_an_address_header_full_of_quote_characters_is_kept_as_text_cut_to_a_length():
    mail = parse_message(hostile_shapes.quote_addresses(4 * 64 * 1024))

    assert mail.to and all(len(address.encode()) <= MAX_ADDRESS_BYTES for address in mail.to)
    assert mail.to[0].endswith(CUT_MARK)


def test_references_keep_the_threads_root_and_the_latest_ids():
    mail = parse_message(hostile_shapes.long_references(468 * 1024))

    assert len(mail.references) == MAX_REFERENCES
    assert mail.references[0] == "<0.ref@example.test>"
    assert mail.references[-1].endswith(".ref@example.test>")
    assert mail.references[-1] != f"<{MAX_REFERENCES - 1}.ref@example.test>"
    assert any(note.startswith("references:") for note in mail.cut)


def test_a_mail_of_thousands_of_parts_keeps_the_first_ones_as_files_and_says_so():
    mail = parse_message(hostile_shapes.many_parts(9000 * len(hostile_shapes.ONE_BYTE_PART)))

    assert len(mail.attachments) == MAX_ATTACHMENTS
    assert f"attachments: {MAX_ATTACHMENTS} of 9000 kept as files, all are in the raw message" in mail.cut


def test_embedded_messages_past_the_attachment_cap_are_counted_once_each():
    inner = "--B\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\nbody\r\n"
    raw = (
        "From: a@example.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B\r\n\r\n"
        + inner * (MAX_ATTACHMENTS + 3)
        + "--B--\r\n"
    ).encode()

    mail = parse_message(raw)

    assert len(mail.attachments) == MAX_ATTACHMENTS
    assert (
        f"attachments: {MAX_ATTACHMENTS} of {MAX_ATTACHMENTS + 3} kept as files, all are in the raw message"
        in (mail.cut)
    )


def test_html_nested_deeper_than_the_cap_loses_the_deeper_start_tags_but_not_its_text():
    html = "<div>" * (MAX_HTML_DEPTH + 200) + "deep text" + "</div>" * (MAX_HTML_DEPTH + 200)

    cleaned = safe_html(html)

    assert cleaned.count("<div>") == MAX_HTML_DEPTH
    assert "deep text" in cleaned


def test_stray_end_tags_do_not_let_nesting_past_the_cap():
    html = "<div></span>" * (MAX_HTML_DEPTH + 50)

    assert safe_html(html).count("<div>") == MAX_HTML_DEPTH


def test_void_elements_do_not_count_as_nesting():
    html = "<br>" * (MAX_HTML_DEPTH + 5) + "<p>text</p>"

    assert safe_html(html).count("<br>") == MAX_HTML_DEPTH + 5


def test_html_longer_than_the_cap_is_cut():
    assert len(safe_html("<p>" + "x" * (MAX_HTML_CHARS + 10) + "</p>")) <= MAX_HTML_CHARS + len("</p>")


def test_unclosed_formatting_elements_past_the_cap_are_dropped_so_blocks_do_not_reopen_them_all():
    html = "".join(f'<p><b title="{n}">x</p>' for n in range(MAX_FORMATTING + 30))

    blocks = safe_html(html).split("<p>")

    assert max(block.count("<b") for block in blocks) <= MAX_FORMATTING
