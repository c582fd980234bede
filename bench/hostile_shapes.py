"""Generators of hostile received mail (issue 9): each shape at a chosen size, plus an ordinary
mail of about the same size to compare against. Generators, not fixture files."""

from __future__ import annotations

from collections.abc import Callable

_HEAD = (
    b"From: Sender <sender@example.test>\r\n"
    b"To: box@example.test\r\n"
    b"Date: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
    b"Message-ID: <hostile@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
)


def _folded(words: list[bytes], name: bytes) -> bytes:
    """A header of many words, folded at ~76 columns (standard-conforming, only long)."""
    lines: list[bytes] = []
    line = name + b":"
    for word in words:
        if len(line) + 1 + len(word) > 76:
            lines.append(line)
            line = b""
        line += b" " + word
    lines.append(line)
    return b"\r\n".join(lines) + b"\r\n"


def long_references(size: int) -> bytes:
    """A References header of `size` bytes of message ids (468 KB broke the item)."""
    words = [b"<%d.ref@example.test>" % n for n in range(size // 22 + 1)]
    return (
        _HEAD + _folded(words, b"References") + b"Subject: long references\r\n"
        b"Content-Type: text/plain\r\n\r\nhello\r\n"
    )


def nested_html(size: int) -> bytes:
    """An HTML body of `size` bytes of nested <div> (1 MB took 206 s)."""
    depth = size // 11
    body = b"<div>" * depth + b"x" + b"</div>" * depth
    return _HEAD + b"Subject: nested\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" + body + b"\r\n"


def quote_addresses(size: int) -> bytes:
    """Four address headers of `size`/4 bytes of `"` each (4 x 64 KB took 212 s)."""
    each = size // 4
    quotes = b'"' * each
    headers = b"".join(
        _folded([quotes[i : i + 70] for i in range(0, each, 70)], name)
        for name in (b"To", b"Cc", b"Reply-To", b"Bcc")
    )
    return (
        b"From: Sender <sender@example.test>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
        + headers
        + b"Subject: quotes\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
    )


def encoded_word_subject(size: int) -> bytes:
    """A Subject of encoded words, `size` bytes (8,000 words took 494 MiB)."""
    words = [b"=?utf-8?q?w%d?=" % n for n in range(size // 13 + 1)]
    return _HEAD + _folded(words, b"Subject") + b"Content-Type: text/plain\r\n\r\nhello\r\n"


ONE_BYTE_PART = b"--b\r\nContent-Type: application/octet-stream\r\n\r\nx\r\n"


def many_parts(size: int) -> bytes:
    """A multipart of one-byte parts, about `size` bytes (9,000 parts wrote 9,000 objects)."""
    count = max(1, size // len(ONE_BYTE_PART))
    return (
        _HEAD
        + b"Subject: parts\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        + ONE_BYTE_PART * count
        + b"--b--\r\n"
    )


def long_content_type(size: int) -> bytes:
    """Parts whose Content-Type carries `size`/20 bytes of parameters each (parsed per use)."""
    params = b"; ".join(b"p%d=v" % n for n in range(size // 20 // 6 + 1))
    part = b"--b\r\nContent-Type: text/plain; " + params + b"\r\n\r\nx\r\n"
    return (
        _HEAD + b"Subject: ct\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + part * 20 + b"--b--\r\n"
    )


def _html_mail(subject: bytes, body: bytes) -> bytes:
    return (
        _HEAD
        + b"Subject: "
        + subject
        + b"\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        + body
        + b"\r\n"
    )


def formatting_blocks(size: int) -> bytes:
    """Blocks each leaving a distinct <b> unclosed: a parser reopens all of them in every block."""
    blocks = b"".join(b'<p><b title="%d">x</p>' % n for n in range(size // 24))
    return _html_mail(b"formatting", blocks)


def unclosed_tags(size: int) -> bytes:
    """`<a` repeated with no `>`: a tag pattern that looks for each one's `>` is cubic here."""
    return _html_mail(b"unclosed", b"<a" * (size // 2))


def ordinary(size: int) -> bytes:
    """An ordinary mail of about `size` bytes: text and HTML alternatives and one attachment."""
    paragraph = b"<p>Dear customer, your order 12345 has shipped. Kind regards, the shop.</p>\r\n"
    html = paragraph * max(1, size // 2 // len(paragraph))
    text = b"Dear customer, your order has shipped.\r\n" * max(1, size // 4 // 40)
    return (
        _HEAD + b"Subject: Your order\r\nContent-Type: multipart/alternative; boundary=alt\r\n\r\n"
        b"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
        + text
        + b"\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
        + html
        + b"\r\n--alt--\r\n"
    )


SHAPES: dict[str, tuple[Callable[[int], bytes], int]] = {
    # name: (generator, the size the issue reported)
    "long_references": (long_references, 468 * 1024),
    "nested_html": (nested_html, 1024 * 1024),
    "quote_addresses": (quote_addresses, 4 * 64 * 1024),
    "encoded_word_subject": (encoded_word_subject, 8000 * 13),
    "many_parts": (many_parts, 9000 * len(ONE_BYTE_PART)),
    "long_content_type": (long_content_type, 20 * 1200),
    # Found while bounding the sanitizer (not in the issue):
    "formatting_blocks": (formatting_blocks, 256 * 1024),
    "unclosed_tags": (unclosed_tags, 64 * 1024),
}
