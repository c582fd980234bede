"""Properties of the mail code under any input (hypothesis): a request the models accept builds a
message the stdlib parses back to the same addresses, subject, bodies and attachment names; a
request they refuse names the field; the HTML sanitizer is idempotent and lets no script through."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import UTC, datetime
from email.headerregistry import Address
from html.parser import HTMLParser

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from mailcore.models import SendRequest, StoredFile
from mailcore.sanitize import safe_html
from mailcore.services.send import compose
from pydantic import ValidationError

from tests.fakes import memory_storage
from tests.unit.test_api_input import HEADER_UNSAFE, account

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
# Repeatable in CI (derandomize) and nothing written to the worktree (no example database).
BOUNDED = settings(
    max_examples=120,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

# Text in any script: every code point but surrogates and control characters.
any_text = st.text(st.characters(exclude_categories=("Cs", "Cc", "Zl", "Zp")), max_size=60)
label = st.from_regex(r"[a-z0-9](?:[a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
local_part = st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(?:\.[A-Za-z0-9_-]{1,10})?", fullmatch=True)
address = st.builds(
    lambda local, labels: f"{local}@{'.'.join(labels)}.test",
    local_part,
    st.lists(label, min_size=1, max_size=3),
)


def parsed(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=email.policy.default)  # type: ignore[return-value]


def normalised(text: str) -> str:
    """What a text body is after the trip: lines end in \\n (CR LF, CR or LF before), and one
    ends the text."""
    text = re.sub(r"\r\n?", "\n", text)
    return text if text.endswith("\n") else text + "\n"


@BOUNDED
@given(
    recipients=st.lists(
        st.tuples(any_text.map(lambda name: " ".join(name.split())), address), min_size=1, max_size=3
    )
)
def test_recipients_in_any_script_come_back_as_sent(recipients):
    # Runs of white space in a display name fold to one space (the email package's folding).
    request = SendRequest(
        to=[str(Address(display_name=name, addr_spec=addr)) for name, addr in recipients], body_text="x"
    )
    storage = memory_storage()
    mail = compose(account(), request, storage=storage, status="queued", now=NOW)
    header = parsed(storage.blobs.get(mail.raw_key))["To"]
    # A long name goes out as several adjacent encoded-words (RFC 2047, correct); the stdlib's
    # reader puts a space between them, so names are compared without their white space.
    found = [("".join(found.display_name.split()), found.addr_spec) for found in header.addresses]
    assert found == [("".join(name.split()), addr) for name, addr in recipients]


@BOUNDED
@given(subject=any_text, body=st.text(st.characters(exclude_categories=("Cs",)), max_size=300))
def test_a_subject_and_a_text_body_in_any_script_come_back_as_sent(subject, body):
    subject = " ".join(subject.split())  # header folding keeps words, not runs of white space
    request = SendRequest(to="a@example.test", subject=subject, body_text=body)
    storage = memory_storage()
    message = parsed(
        storage.blobs.get(compose(account(), request, storage=storage, status="queued", now=NOW).raw_key)
    )
    assert message["Subject"] == subject
    assert normalised(message.get_body(("plain",)).get_content()) == normalised(body)


@BOUNDED
@given(name=any_text.filter(lambda n: n.strip() not in ("", ".", "..") and "/" not in n and "\\" not in n))
def test_attachment_names_in_any_script_come_back_as_stored(name):
    name = " ".join(name.split())
    assume(name)
    storage = memory_storage()
    storage.blobs.put("t/f1", b"data", "text/plain")
    storage.files.put(
        StoredFile(
            id="f1", team="t", name=name, content_type="text/plain", size=4, s3_key="t/f1", created_at=NOW
        )
    )
    request = SendRequest(to="a@example.test", body_text="x", attachments=["f1"])
    message = parsed(
        storage.blobs.get(compose(account(), request, storage=storage, status="queued", now=NOW).raw_key)
    )
    (attachment,) = message.iter_attachments()
    assert attachment.get_filename() == name


@BOUNDED
@given(
    before=any_text,
    unsafe=st.sampled_from(HEADER_UNSAFE),
    after=any_text,
    field=st.sampled_from(["subject", "to", "cc", "reply_to"]),
)
def test_a_refused_request_is_refused_naming_the_field(before, unsafe, after, field):
    value = (
        f"{before}{unsafe}{after}" if field == "subject" else f'"{before}{unsafe}{after}" <a@example.test>'
    )
    try:
        SendRequest(**{"to": "b@example.test", "body_text": "x", field: value})
    except ValidationError as error:
        assert error.errors()[0]["loc"][0] == field
    else:
        raise AssertionError(f"{field}={value!r} was accepted")


markup = st.recursive(
    st.text(max_size=20),
    lambda inner: st.builds(
        lambda tag, attr, body: f"<{tag} {attr}>{body}</{tag}>",
        st.sampled_from(
            ["script", "style", "a", "img", "svg", "math", "iframe", "p", "b", "div", "noscript", "template"]
        ),
        st.sampled_from(
            [
                'href="javascript:alert(1)"',
                'src="x" onerror="alert(1)"',
                'style="x:expression(1)"',
                "",
                'href="data:text/html,x"',
            ]
        ),
        st.lists(inner, max_size=3).map("".join),
    ),
    max_leaves=12,
)
_SCRIPT_TAGS = {"script", "iframe", "object", "embed", "svg", "math", "style", "template", "noscript"}
_SCRIPT_URL = re.compile(r"^\s*(javascript|vbscript|data)\s*:", re.I)


class _Elements(HTMLParser):
    """The elements and attributes a browser would build from the markup."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        self.found.append(("/" + tag, []))

    def handle_data(self, data: str) -> None:
        self.found.append(("#text", [("", data)]))


def structure(html: str) -> list[tuple[str, frozenset[tuple[str, str | None]]]]:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return [(tag, frozenset(attrs)) for tag, attrs in parser.found]


def script_contexts(html: str) -> list[str]:
    parser = _Elements()
    parser.feed(html)
    parser.close()
    bad = [tag for tag, _ in parser.found if tag in _SCRIPT_TAGS]
    for tag, attrs in parser.found:
        bad += [f"{tag} {name}" for name, value in attrs if name.startswith("on")]
        bad += [f"{tag} {name}={value}" for name, value in attrs if value and _SCRIPT_URL.match(value)]
    return bad


@BOUNDED
@given(html=st.one_of(markup, st.text(max_size=200)))
def test_the_sanitizer_is_idempotent_and_lets_no_script_context_through(html):
    once = safe_html(html)
    # Idempotent as markup: the same elements, attributes and text (nh3 may write a link's
    # added rel and target in the other order the second time).
    assert structure(safe_html(once)) == structure(once)
    assert script_contexts(once) == []
