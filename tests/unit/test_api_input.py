"""Any input is a 400 naming the field, never a 5xx: bodies that are not JSON objects, header
values the email package refuses, addresses smtplib cannot use, stored text reused in a header."""

import base64
import email
import email.policy
import json
from datetime import UTC, datetime

import pytest
from mailcore.models import (
    FileUpload,
    MailAccount,
    SendRequest,
    ServerEndpoint,
    StoredFile,
    parse_addresses,
)
from mailcore.services.send import compose
from mailcore.teams import ResolvedAccount
from mailcore.wiring import store as store_wiring
from mailcore.wiring.store import StoreRoot
from pydantic import ValidationError

from tests.fakes import memory_directory, memory_storage
from tests.support import claims, rest_event
from tests.unit.test_handlers import LambdaContext, load

# Every character the email package refuses in a header value (str.splitlines breaks there,
# NUL and the C0 controls, DEL) and a lone surrogate (not encodable).
HEADER_UNSAFE = [
    "\r",
    "\n",
    "\x00",
    "\x0b",
    "\x0c",
    "\x1c",
    "\x1d",
    "\x1e",
    "\x85",
    "\u2028",
    "\u2029",
    "\ud800",
]
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.fixture
def store_app(monkeypatch):
    root = StoreRoot(storage=memory_storage(), directory=memory_directory())
    monkeypatch.setattr(store_wiring, "root", lambda: root)
    return load("store")


def post_files(app, body: str, *, base64_encoded: bool = False, content_type: str = "application/json"):
    event = rest_event(
        "POST",
        "/api/core/files",
        resource="/api/core/files",
        body=body,
        caller=claims("t"),
        headers={"Content-Type": content_type},
    )
    event["isBase64Encoded"] = base64_encoded
    answer = app.lambda_handler(event, LambdaContext())
    return answer["statusCode"], json.loads(answer["body"])


def test_a_body_that_is_not_utf8_is_a_400_naming_the_body(store_app):
    status, answer = post_files(
        store_app, base64.b64encode(b'{"name": "\xff"}').decode(), base64_encoded=True
    )
    assert status == 400 and answer["error"]["field"] == "body"
    assert "UTF-8" in answer["error"]["message"]


def test_a_body_nested_100000_deep_is_a_400_naming_the_body(store_app):
    status, answer = post_files(store_app, "[" * 100_000 + "]" * 100_000)
    assert status == 400 and answer["error"]["field"] == "body"
    assert "nested" in answer["error"]["message"]


@pytest.mark.parametrize("body", ["not json", "[1]", "1", '"text"', "null"])
def test_a_body_that_is_not_a_json_object_is_a_400(store_app, body):
    status, answer = post_files(store_app, body)
    assert status == 400 and answer["error"]["code"] == "invalid_input"


def test_a_body_of_another_media_type_is_a_415(store_app):
    status, answer = post_files(store_app, "name=x", content_type="text/plain")
    assert status == 415 and answer["error"]["field"] == "Content-Type"


@pytest.mark.parametrize("character", HEADER_UNSAFE)
@pytest.mark.parametrize("field", ["subject", "to", "reply_to"])
def test_a_header_value_with_a_character_the_email_package_refuses_is_rejected(field, character):
    values = {"to": "a@example.test", "body_text": "x"}
    values[field] = f"A{character}B <b@example.test>" if field != "subject" else f"Hi{character}there"
    with pytest.raises(ValidationError) as caught:
        SendRequest(**values)
    assert caught.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize("character", HEADER_UNSAFE)
def test_a_file_name_with_a_character_the_email_package_refuses_is_rejected(character):
    with pytest.raises(ValidationError) as caught:
        FileUpload(name=f"report{character}.pdf", content="")
    assert caught.value.errors()[0]["loc"][0] == "name"


@pytest.mark.parametrize("field", ["body_text", "body_html"])
def test_a_body_with_a_lone_surrogate_is_rejected(field):
    with pytest.raises(ValidationError) as caught:
        SendRequest(to="a@example.test", **{field: "half \ud800 a character"})
    assert caught.value.errors()[0]["loc"][0] == field


@pytest.mark.parametrize(
    "address", ["a@example.com.", "a@.example.com", "a@example..com", "a@-example.com", "a@exa_mple.com"]
)
def test_an_address_the_mime_builder_could_not_use_is_rejected(address):
    with pytest.raises(ValidationError) as caught:
        SendRequest(to=address, body_text="x")
    assert caught.value.errors()[0]["loc"][0] == "to"


def test_a_non_ascii_domain_is_sent_as_idna():
    assert parse_addresses("Jörg <j@bücher.example>") == ["Jörg <j@xn--bcher-kva.example>"]


def test_a_non_ascii_local_part_is_refused_saying_it_needs_smtputf8():
    with pytest.raises(ValidationError, match="SMTPUTF8"):
        SendRequest(to="jörg@example.test", body_text="x")


def account() -> ResolvedAccount:
    endpoint = ServerEndpoint(host="mail.example.test", port=587, security="starttls")
    config = MailAccount(
        mail_from="desk@example.test", mail_username="desk", mail_password="pw", smtp=endpoint, pop3=endpoint
    )
    return ResolvedAccount("t", "desk", config)


def test_a_reply_to_a_mail_whose_subject_holds_a_line_separator_builds():
    storage = memory_storage()
    original = compose(
        account(), SendRequest(to="a@example.test", body_text="x"), storage=storage, status="sent"
    )
    storage.mail.put_new(original.model_copy(update={"subject": "Offer\u2028Bcc: x@evil.test"}))
    reply = compose(
        account(),
        SendRequest(to="a@example.test", body_text="y", reply_to_mail=original.id),
        storage=storage,
        status="queued",
    )
    raw = storage.blobs.get(reply.raw_key)
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert parsed["Subject"] == "Re: Offer Bcc: x@evil.test" and parsed["Bcc"] is None


def test_a_stored_file_whose_name_the_email_package_refuses_is_attached_under_a_safe_name():
    storage = memory_storage()
    storage.blobs.put("t/f1", b"data", "text/plain")
    storage.files.put(
        StoredFile(
            id="f1",
            team="t",
            name="a\x00b\x0bc.txt",
            content_type="text/plain",
            size=4,
            s3_key="t/f1",
            created_at=NOW,
        )
    )
    mail = compose(
        account(),
        SendRequest(to="a@example.test", body_text="x", attachments=["f1"]),
        storage=storage,
        status="queued",
    )
    parsed = email.message_from_bytes(storage.blobs.get(mail.raw_key), policy=email.policy.default)
    (attachment,) = parsed.iter_attachments()
    assert attachment.get_filename() == "a b c.txt"


def registered_upload(storage, declared: int, uploaded: bytes) -> str:
    from mailcore.services.files import store_file
    from mailcore.teams import Caller

    caller = Caller(user="u@example.test", teams=frozenset({"t"}))
    stored, _ = store_file(
        caller,
        team="t",
        name="big.bin",
        content_type="application/pdf",
        content=None,
        size=declared,
        storage=storage,
    )
    storage.blobs.put(stored.s3_key, uploaded, "application/pdf")
    return stored.id


def test_a_file_uploaded_larger_than_declared_is_refused_when_attached():
    from mailcore.errors import InvalidInput

    storage = memory_storage()
    file_id = registered_upload(storage, declared=1, uploaded=b"x" * 60_000)
    with pytest.raises(InvalidInput) as caught:
        compose(
            account(),
            SendRequest(to="a@example.test", body_text="x", attachments=[file_id]),
            storage=storage,
            status="queued",
        )
    assert (
        caught.value.status == 400
        and caught.value.field == "attachments"
        and "declared" in caught.value.message
    )


def test_a_file_uploaded_with_its_declared_size_is_attached():
    storage = memory_storage()
    file_id = registered_upload(storage, declared=5, uploaded=b"12345")
    mail = compose(
        account(),
        SendRequest(to="a@example.test", body_text="x", attachments=[file_id]),
        storage=storage,
        status="queued",
    )
    parsed = email.message_from_bytes(storage.blobs.get(mail.raw_key), policy=email.policy.default)
    assert [part.get_content() for part in parsed.iter_attachments()] == [b"12345"]


@pytest.mark.parametrize(
    "content_type",
    ["multipart/form-data", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"],
)
def test_a_form_or_multipart_body_is_a_415(store_app, content_type):
    status, answer = post_files(store_app, "name=x", content_type=content_type)
    assert status == 415 and answer["error"]["field"] == "Content-Type"


@pytest.mark.parametrize("content_type", ["té/xt", "text/plaiñ", "text/pl ain", "text"])
def test_a_content_type_that_is_not_an_ascii_media_type_is_refused(content_type):
    with pytest.raises(ValidationError) as caught:
        FileUpload(name="a.txt", content_type=content_type, content="")
    assert caught.value.errors()[0]["loc"][0] == "content_type"


def test_a_body_with_300000_unknown_members_is_a_small_400_naming_the_body(store_app):
    status, answer = post_files(store_app, json.dumps({f"k{number}": 1 for number in range(300_000)}))
    assert status == 400 and answer["error"]["field"] == "body"
    # Lambda answers at most 6 MB; the error must stay far below that.
    assert len(json.dumps(answer)) < 10_000
