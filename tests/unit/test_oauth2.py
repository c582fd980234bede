"""OAuth2 account configuration and the token broker (against the local token endpoint on loopback)."""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from mailcore.models import MailAccount, OAuth2Auth, Pop3AuthForm
from mailcore.oauth2 import OAuth2Error, TokenBroker, describe_sasl_error, xoauth2_base64, xoauth2_payload
from mailcore.protocols import reach
from pydantic import ValidationError

from local.oauth2_server import OAuth2Server

SERVERS = {
    "smtp": {"host": "smtp.example.test", "port": 587, "security": "starttls"},
    "pop3": {"host": "pop.example.test", "port": 995, "security": "ssl"},
}
MICROSOFT = {
    "mode": "oauth2",
    "provider": "microsoft",
    "tenant_id": "contoso.onmicrosoft.com",
    "client_id": "app-id",
    "client_secret": "app-secret",
}
GOOGLE = {
    "mode": "oauth2",
    "provider": "google",
    "client_id": "cid.apps.googleusercontent.com",
    "client_secret": "gsecret",
    "refresh_token": "1//refresh",
}


def account(**values):
    return MailAccount.model_validate(
        {"mail_from": "desk@example.test", "mail_username": "desk@example.test", **SERVERS, **values}
    )


def test_an_account_without_auth_logs_in_with_its_password_as_before():
    found = account(mail_password="pw")
    assert found.oauth2 is None and found.mail_password.get_secret_value() == "pw"


def test_a_password_account_without_a_password_is_refused():
    with pytest.raises(ValidationError, match="mail_password is required"):
        account()


def test_a_microsoft_app_only_account_defaults_to_the_outlook_scope_and_its_tenant_token_url():
    auth = account(auth=MICROSOFT).oauth2
    assert auth is not None and auth.grant_type == "client_credentials"
    assert auth.effective_scope == "https://outlook.office365.com/.default"
    assert (
        auth.effective_token_url
        == "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    )
    assert auth.pop3_auth_form is Pop3AuthForm.TWO_STEP


def test_a_microsoft_delegated_account_uses_the_refresh_token_grant_without_a_client_secret():
    auth = OAuth2Auth.model_validate({**MICROSOFT, "client_secret": None, "refresh_token": "rt"})
    assert auth.grant_type == "refresh_token" and "offline_access" in auth.effective_scope


def test_a_google_account_uses_googles_token_url_and_mail_scope():
    auth = account(auth=GOOGLE).oauth2
    assert auth is not None
    assert auth.effective_token_url == "https://oauth2.googleapis.com/token"
    assert auth.effective_scope == "https://mail.google.com/"


def test_a_google_account_without_a_refresh_token_is_refused():
    with pytest.raises(ValidationError, match="refresh_token"):
        account(auth={**GOOGLE, "refresh_token": None})


def test_a_plain_http_token_url_is_refused_unless_on_loopback():
    with pytest.raises(ValidationError, match="https"):
        account(auth={**MICROSOFT, "token_url": "http://login.example.test/token"})
    assert account(auth={**MICROSOFT, "token_url": "http://127.0.0.1:9/token"}).oauth2 is not None


def test_oauth2_secrets_are_secret_strings():
    shown = repr(account(auth=GOOGLE))
    assert "gsecret" not in shown and "1//refresh" not in shown


def test_microsoft_oauth2_accounts_default_to_exchange_online_limits_and_others_to_none():
    assert (account(auth=MICROSOFT).connection_limit, account(auth=MICROSOFT).message_rate_limit) == (3, 30)
    assert account(auth=GOOGLE).message_rate_limit is None
    assert account(auth=MICROSOFT, max_messages_per_minute=10).message_rate_limit == 10


def test_the_xoauth2_payload_is_user_and_bearer_separated_by_ctrl_a():
    assert xoauth2_payload("a@b.test", "tok") == "user=a@b.test\x01auth=Bearer tok\x01\x01"
    assert base64.b64decode(xoauth2_base64("a@b.test", "tok")) == b"user=a@b.test\x01auth=Bearer tok\x01\x01"


def test_a_servers_xoauth2_error_challenge_is_described_by_its_status():
    challenge = base64.b64encode(json.dumps({"status": "401", "schemes": "bearer", "scope": "mail"}).encode())
    assert describe_sasl_error(challenge) == "status 401, schemes bearer, scope mail"
    assert describe_sasl_error(b"not base64 json") is None


@pytest.fixture
def provider():
    server = OAuth2Server().start()
    yield server
    server.stop()


def generic(provider: OAuth2Server, *, refresh: bool = True) -> OAuth2Auth:
    client = provider.add_client("desk@example.test")
    values = {
        "mode": "oauth2",
        "provider": "generic",
        "client_id": client.client_id,
        "client_secret": client.client_secret,
        "token_url": provider.token_url,
        "scope": "mail",
    }
    if refresh:
        values["refresh_token"] = provider.issue_refresh_token(client)
    return OAuth2Auth.model_validate(values)


def test_a_token_is_cached_until_shortly_before_it_expires(provider, clock):
    provider.token_lifetime = 120
    broker = TokenBroker(clock=clock)
    auth = generic(provider)
    first = broker.access_token("t", "a", auth)
    clock.now += 80  # 120 s token, renewed 30 s (a quarter) before it runs out
    assert broker.access_token("t", "a", auth) == first
    clock.now += 15
    assert broker.access_token("t", "a", auth) != first
    assert provider.calls["refresh_token"] == 2


def test_a_rotated_refresh_token_is_handed_to_the_writer_and_used_next(provider, clock):
    provider.rotate_refresh_tokens = True
    written: list[tuple[str, str, str]] = []
    broker = TokenBroker(on_rotated=lambda *args: written.append(args), clock=clock)
    auth = generic(provider)
    broker.access_token("t", "a", auth)
    assert len(written) == 1 and written[0][:2] == ("t", "a")
    assert written[0][2] != auth.refresh_token.get_secret_value()
    clock.now += 10_000
    broker.access_token("t", "a", auth)  # the secret still holds the old one: the newest is used
    assert len(written) == 2


def test_an_invalid_grant_is_remembered_and_never_asked_again(provider):
    broker = TokenBroker()
    auth = generic(provider)
    provider.revoke(auth.refresh_token.get_secret_value())
    for _ in range(3):
        with pytest.raises(OAuth2Error) as caught:
            broker.access_token("t", "a", auth)
        assert caught.value.error == "invalid_grant" and not caught.value.temporary
    assert provider.calls["refresh_token"] == 1


def test_a_wrong_client_secret_is_a_permanent_error_naming_the_client(provider):
    auth = generic(provider, refresh=False).model_copy(update={"client_secret": None})
    auth = OAuth2Auth.model_validate({**auth.model_dump(), "client_secret": "wrong"})
    with pytest.raises(OAuth2Error, match="check client_id and client_secret") as caught:
        TokenBroker().access_token("t", "a", auth)
    assert "wrong" not in caught.value.message


def test_an_unreachable_token_endpoint_is_temporary():
    auth = OAuth2Auth.model_validate(
        {
            "mode": "oauth2",
            "provider": "generic",
            "client_id": "c",
            "client_secret": "s",
            "token_url": "http://127.0.0.1:9/t",
            "scope": "x",
        }
    )
    with pytest.raises(OAuth2Error) as caught:
        TokenBroker().access_token("t", "a", auth)
    assert caught.value.temporary


def test_a_failed_write_back_of_a_rotated_token_is_logged_and_the_login_goes_on(provider, caplog):
    provider.rotate_refresh_tokens = True

    def failing_writer(team: str, account: str, token: str) -> None:
        raise RuntimeError("AccessDeniedException")

    broker = TokenBroker(on_rotated=failing_writer)
    auth = generic(provider)
    assert broker.access_token("t", "a", auth)
    assert "could not write the rotated refresh token of t/a" in caplog.text
    for token in provider.issued:
        assert token not in caplog.text


class HostileTokenEndpoint:
    """A token endpoint on loopback answering what a test sets, given the form it received."""

    def __init__(self, answer) -> None:
        self.answer = answer  # (form) -> (status, body bytes[, headers])
        self.requests = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                raw = urllib.parse.urlencode(form)
                outer.requests += 1
                status, body, *headers = outer.answer({**form, "raw": raw})
                self.send_response(status)
                for name, value in headers[0].items() if headers else ():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def auth(self, **values) -> OAuth2Auth:
        return OAuth2Auth.model_validate(
            {
                "mode": "oauth2",
                "provider": "generic",
                "client_id": "cid",
                "client_secret": "s3cr3t+/of=the/app",
                "refresh_token": "1//rt+of/the=user",
                "token_url": f"http://127.0.0.1:{self.server.server_address[1]}/token",
                "scope": "mail",
                **values,
            }
        )

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hostile():
    endpoints: list[HostileTokenEndpoint] = []

    def start(answer) -> HostileTokenEndpoint:
        endpoints.append(HostileTokenEndpoint(answer))
        return endpoints[-1]

    yield start
    for endpoint in endpoints:
        endpoint.close()


SECRETS_AS_SENT = ["s3cr3t+/of=the/app", "1//rt+of/the=user"]


def shown_forms(secret: str) -> list[str]:
    return [
        secret,
        urllib.parse.quote_plus(secret),
        urllib.parse.quote(secret, safe=""),
        base64.b64encode(secret.encode()).decode(),
    ]


def test_a_token_endpoint_echoing_the_secrets_in_its_error_shows_none_of_them(hostile):
    def echo(form):
        body = {
            "error": form["client_secret"],
            "error_description": f"bad request {form['raw']} for {form['refresh_token']}",
        }
        return 400, json.dumps(body).encode()

    endpoint = hostile(echo)
    with pytest.raises(OAuth2Error) as caught:
        TokenBroker().access_token("t", "a", endpoint.auth())
    shown = " ".join(
        [caught.value.message, str(caught.value), repr(caught.value.args), str(caught.value.error)]
    )
    for secret in SECRETS_AS_SENT:
        for form in shown_forms(secret):
            assert form not in shown
    assert "<redacted>" in shown


def test_a_token_endpoint_echoing_the_secret_at_the_cut_of_its_description_shows_no_part_of_it(hostile):
    endpoint = hostile(
        lambda form: (
            400,
            json.dumps(
                {"error": "invalid_request", "error_description": "x" * 290 + form["client_secret"]}
            ).encode(),
        )
    )
    with pytest.raises(OAuth2Error) as caught:
        TokenBroker().access_token("t", "a", endpoint.auth())
    assert "s3cr3t" not in caught.value.message


def test_a_huge_token_answer_is_refused_without_reading_it_all(hostile):
    endpoint = hostile(lambda form: (200, b'{"access_token": "' + b"a" * 20_000_000 + b'"}'))
    with pytest.raises(OAuth2Error, match="more than") as caught:
        TokenBroker().access_token("t", "a", endpoint.auth())
    assert caught.value.temporary


def test_a_token_answer_nested_too_deep_is_an_oauth2_error(hostile):
    endpoint = hostile(lambda form: (200, b"[" * 30_000 + b"]" * 30_000))
    with pytest.raises(OAuth2Error, match="not JSON"):
        TokenBroker().access_token("t", "a", endpoint.auth())
    refused = hostile(lambda form: (400, b'{"error":' + b"[" * 30_000 + b"]" * 30_000 + b"}"))
    with pytest.raises(OAuth2Error, match="HTTP 400"):
        TokenBroker().access_token("t", "a", refused.auth())


@pytest.mark.parametrize("expires_in", ["3600", "soon", {"s": 1}, None, -5, 1e308])
def test_a_token_answer_with_any_expires_in_still_gives_the_token(hostile, expires_in):
    endpoint = hostile(
        lambda form: (200, json.dumps({"access_token": "tok", "expires_in": expires_in}).encode())
    )
    assert TokenBroker().access_token("t", "a", endpoint.auth()) == "tok"


def test_a_token_endpoint_on_an_address_that_is_not_allowed_is_never_reached(hostile):
    endpoint = hostile(lambda form: (200, b'{"access_token": "t"}'))
    reach.allow_networks(())  # as deployed: loopback is not a place for a token endpoint
    with pytest.raises(OAuth2Error) as refused:
        TokenBroker().access_token("t", "a", endpoint.auth())
    assert "127.0.0.1, a loopback address" in refused.value.message and not refused.value.temporary
    assert endpoint.requests == 0


def test_a_token_endpoint_redirecting_elsewhere_is_not_followed(hostile):
    elsewhere = hostile(lambda form: (200, b'{"access_token": "t"}'))
    where = f"http://127.0.0.1:{elsewhere.server.server_address[1]}/token"
    redirecting = hostile(lambda form: (307, b"", {"Location": where}))
    with pytest.raises(OAuth2Error) as refused:
        TokenBroker().access_token("t", "a", redirecting.auth())
    assert "HTTP 307" in refused.value.message
    assert redirecting.requests == 1 and elsewhere.requests == 0
