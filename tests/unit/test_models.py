import pytest
from mailcore.models import FileUpload, MailAccount, SendRequest, TeamConfig, parse_addresses
from pydantic import ValidationError

from tests.support import account_config

ACCOUNT = account_config(
    mail_from="Support <support@example.test>", mail_username="agent@example.test", mail_password="s3cret-pw"
)


def test_recipients_may_be_a_comma_separated_string():
    request = SendRequest(to="a@example.test, B <b@example.test>", body_text="hi")
    assert request.to == ["a@example.test", "B <b@example.test>"]


def test_a_quoted_display_name_with_a_comma_stays_one_address():
    assert parse_addresses('"Doe, John" <john@example.test>') == ['"Doe, John" <john@example.test>']


def test_attachments_may_be_a_comma_separated_string_of_file_ids():
    request = SendRequest(to=["a@example.test"], body_text="hi", attachments="f1, f2")
    assert request.attachments == ["f1", "f2"]


@pytest.mark.parametrize("field", ["subject", "to"])
def test_header_values_with_line_breaks_are_rejected(field):
    values = {"to": "a@example.test", "body_text": "x", field: "x@example.test\r\nBcc: evil@example.test"}
    with pytest.raises(ValidationError) as caught:
        SendRequest(**values)
    assert caught.value.errors()[0]["loc"][0] == field


def test_an_address_without_a_domain_is_rejected():
    with pytest.raises(ValidationError):
        SendRequest(to="not-an-address", body_text="x")


def test_unknown_request_fields_are_rejected():
    with pytest.raises(ValidationError):
        SendRequest(to="a@example.test", body_text="x", sender="me@example.test")


def test_a_request_without_recipients_names_the_to_field():
    assert SendRequest(body_text="x").missing() == (
        "to",
        "at least one recipient (to, cc or bcc) is required",
    )


def test_a_request_without_any_body_names_body_text():
    assert SendRequest(to="a@example.test").missing()[0] == "body_text"


def test_envelope_recipients_include_bcc_once_each():
    request = SendRequest(to="a@example.test", cc="A <a@example.test>", bcc="c@example.test", body_text="x")
    assert request.recipients() == ["a@example.test", "c@example.test"]


def test_an_account_password_never_shows_in_its_repr_or_dump():
    account = MailAccount.model_validate(ACCOUNT)
    assert "s3cret-pw" not in repr(account)
    assert "s3cret-pw" not in account.model_dump_json()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("mail_username", "agent\r\nDELE 1"),
        ("mail_password", "pw\r\nDELE 1"),
        ("mail_password", "pw\x00"),
    ],
)
def test_a_login_or_password_with_a_line_break_is_refused_without_repeating_it(field, value):
    with pytest.raises(ValidationError) as refused:
        MailAccount.model_validate({**ACCOUNT, field: value})
    [error] = refused.value.errors(include_input=False)
    assert error["loc"] == (field,) and "DELE" not in error["msg"]


def test_an_oauth2_token_with_a_line_break_is_refused():
    auth = {"mode": "oauth2", "provider": "google", "client_id": "c", "client_secret": "s"}
    with pytest.raises(ValidationError) as refused:
        MailAccount.model_validate({**ACCOUNT, "auth": {**auth, "refresh_token": "rt\nQUIT"}})
    assert refused.value.errors()[0]["loc"][-1] == "refresh_token"


@pytest.mark.parametrize(("field", "limit"), [("mail_username", 320), ("mail_password", 1024)])
def test_logins_and_passwords_have_a_length_limit(field, limit):
    MailAccount.model_validate({**ACCOUNT, field: "x" * limit})
    with pytest.raises(ValidationError):
        MailAccount.model_validate({**ACCOUNT, field: "x" * (limit + 1)})


@pytest.mark.parametrize("host", ["smtp.example.test", "127.0.0.1", "::1", "[2001:db8::1]", "mail.bücher.de"])
def test_a_server_may_be_a_name_or_an_address(host):
    MailAccount.model_validate({**ACCOUNT, "smtp": {"host": host, "port": 25, "security": "none"}})


@pytest.mark.parametrize("host", ["smtp.example.test\r\n", "a b", "https://smtp.example.test", "-x", "h/p"])
def test_a_server_that_is_not_a_host_name_is_refused(host):
    with pytest.raises(ValidationError) as refused:
        MailAccount.model_validate({**ACCOUNT, "smtp": {"host": host, "port": 25, "security": "none"}})
    assert refused.value.errors()[0]["loc"] == ("smtp", "host")


def test_mail_from_may_differ_from_the_login():
    account = MailAccount.model_validate(ACCOUNT)
    assert account.mail_from == "Support <support@example.test>"
    assert account.mail_username == "agent@example.test"


def test_accounts_leave_mail_on_the_server_unless_told_otherwise():
    assert MailAccount.model_validate(ACCOUNT).leave_on_server is True


def test_a_team_that_is_not_a_mail_team_has_no_accounts():
    config = TeamConfig.model_validate({"type": "chat", "accounts": {"x": {"anything": 1}}})
    assert config.accounts == {}


def test_a_misspelt_account_setting_is_an_error():
    with pytest.raises(ValidationError):
        MailAccount.model_validate({**ACCOUNT, "leave_on_sever": False})


def test_an_unknown_security_mode_is_an_error():
    with pytest.raises(ValidationError):
        MailAccount.model_validate({**ACCOUNT, "smtp": {"host": "h", "port": 25, "security": "tls"}})


def test_an_uploaded_file_name_loses_its_path():
    assert FileUpload(name="../../etc/passwd", content="").name == "passwd"
    assert FileUpload(name="C:\\Users\\x\\report.pdf", content="").name == "report.pdf"
