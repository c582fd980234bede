"""The check tool (mail-check) and the API's ?debug=true diagnosis, against the real Dovecot and
Postfix; failures come from broken configurations, or a fault injected between client and server.

Failed logins run from their own loopback address (127.0.0.N): Dovecot makes the next login from
an address that just failed wait seconds."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mailcore.check import main as mail_check

from tests.integration.conftest import claims, wait_for_messages
from tests.integration.fault_proxy import FaultProxy, closed_port, offers_starttls
from tests.integration.test_pull import pull
from tests.integration.test_send import send


def check(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    status = mail_check(list(argv), out=out)
    return status, out.getvalue()


def without_starttls(stack, protocol: str) -> FaultProxy:
    """The real server behind a proxy that hides its offer of TLS, as a misconfigured server (or
    an attacker downgrading) would."""
    upstream = (stack.mail_servers.host, getattr(stack.mail_servers.ports, protocol))
    return FaultProxy(upstream, hide_line=offers_starttls)


def flags(stack, protocol: str, mailbox, *, port: int, security: str, password: str | None = None):
    os.environ["CHECKED_PASSWORD"] = password if password is not None else mailbox.password
    return [
        protocol,
        "--host",
        stack.mail_servers.host,
        "--port",
        str(port),
        "--security",
        security,
        "--user",
        mailbox.address,
        "--password-env",
        "CHECKED_PASSWORD",
        "--timeout",
        "5",
    ]


# ---------------------------------------------------------------- the check tool: working accounts


def test_a_working_pop3_account_is_listed_and_its_password_never_shown(stack, new_team):
    team = new_team()
    send(stack, team, {"to": team.mailbox.address, "subject": "one", "body_text": "x"})
    wait_for_messages(stack, team.mailbox.address, 1)
    status, output = check("pop3", "--team", team.team, "--account", team.account)
    assert status == 0, output
    assert "mailbox: 1 messages" in output and "OK: the POP3 account works" in output
    assert "C: PASS <redacted>" in output and team.mailbox.password not in output


def test_a_working_smtp_account_sends_a_test_mail_when_asked(stack, new_team):
    team = new_team()
    status, output = check(
        "smtp", "--team", team.team, "--account", team.account, "--send-to", team.mailbox.address
    )
    assert status == 0, output
    assert "C: AUTH PLAIN <redacted>" in output and team.mailbox.password not in output
    wait_for_messages(stack, team.mailbox.address, 1)


def test_the_system_configuration_is_checked_with_system(stack):
    status, output = check("smtp", "--system")
    assert status == 0, output
    assert "250" in output and "OK: the SMTP account works" in output


def test_an_unknown_team_is_a_configuration_error_with_status_2(stack):
    status, output = check("pop3", "--team", "no-such-team", "--account", "x")
    assert status == 2 and "no secret" in output


def test_the_console_script_exits_0_only_when_the_account_works(stack, new_team):
    team = new_team()
    script = Path(sys.executable).parent / "mail-check"
    command = [str(script), "pop3", "--team", team.team, "--account", team.account]
    works = subprocess.run(command, capture_output=True, text=True, env=os.environ, timeout=60)
    assert works.returncode == 0, works.stdout + works.stderr
    broken = [*flags(stack, "pop3", team.mailbox, port=closed_port(), security="none")]
    fails = subprocess.run([str(script), *broken], capture_output=True, text=True, env=os.environ, timeout=60)
    assert fails.returncode == 1 and "FAILED (refused)" in fails.stdout


# ---------------------------------------------------------------- the check tool: diagnoses


@pytest.mark.parametrize(
    ("protocol", "port", "security", "source", "hints"),
    [
        pytest.param(
            "pop3", "pop3s", "ssl", "127.0.0.2", ["recent:", "app password"], id="pop3-provider-hints"
        ),
        pytest.param("smtp", "smtp", "starttls", "127.0.0.3", ["SMTP AUTH enabled"], id="smtp"),
    ],
)
def test_a_wrong_password_is_diagnosed(stack, new_team, protocol, port, security, source, hints):
    team = new_team()
    password = f"wrong-pw-of-{protocol}"
    ports = stack.mail_servers.ports
    argv = flags(
        stack, protocol, team.mailbox, port=getattr(ports, port), security=security, password=password
    )
    status, output = check(*argv, "--source-address", source)
    assert status == 1
    assert "FAILED (auth_failed)" in output and all(hint in output for hint in hints), output
    assert password not in output


@pytest.mark.parametrize(
    ("protocol", "port", "security", "failure", "hint"),
    [
        pytest.param("smtp", "pop3", "starttls", "wrong_port", "587", id="smtp-on-the-pop3-port"),
        pytest.param("pop3", "smtp", "none", "wrong_port", "995", id="pop3-on-the-smtp-port"),
        pytest.param("pop3", "pop3", "ssl", "wrong_tls_mode", "starttls", id="implicit-tls-on-a-plain-port"),
    ],
)
def test_a_wrong_port_or_tls_mode_is_named_with_the_setting_to_use(
    stack, new_team, protocol, port, security, failure, hint
):
    team = new_team()
    port_number = getattr(stack.mail_servers.ports, port)
    status, output = check(*flags(stack, protocol, team.mailbox, port=port_number, security=security))
    assert status == 1 and f"FAILED ({failure})" in output and hint in output, output


def test_a_server_not_offering_starttls_is_tls_expected_but_not_offered(stack, new_team):
    team = new_team()
    with without_starttls(stack, "smtp") as proxy:
        status, output = check(*flags(stack, "smtp", team.mailbox, port=proxy.port, security="starttls"))
    assert status == 1 and "FAILED (tls_not_offered)" in output
    assert "C: AUTH" not in output  # no login was sent in clear


def test_a_pop3_server_not_offering_stls_is_tls_expected_but_not_offered(stack, new_team):
    team = new_team()
    with without_starttls(stack, "pop3") as proxy:
        status, output = check(*flags(stack, "pop3", team.mailbox, port=proxy.port, security="starttls"))
    assert status == 1 and "FAILED (tls_not_offered)" in output
    assert "C: USER" not in output and "C: PASS" not in output  # no login was sent in clear


def test_a_host_refusing_connections_is_diagnosed(stack, new_team):
    team = new_team()
    status, output = check(*flags(stack, "smtp", team.mailbox, port=closed_port(), security="starttls"))
    assert status == 1 and "FAILED (refused)" in output and "that the server runs" in output


# ---------------------------------------------------------------- the same diagnosis from the API


def broken_send(stack, new_team, expected: int = 502, **smtp_changes):
    team = new_team()
    smtp = {"host": stack.mail_servers.host, "port": stack.mail_servers.ports.smtp, "security": "starttls"}
    broken = new_team(smtp=smtp | smtp_changes, timeout_seconds=5) if smtp_changes else team
    status, answer = send(
        stack, broken, {"to": team.mailbox.address, "body_text": "x"}, query={"debug": "true"}
    )
    assert status == expected, answer
    return answer


def test_the_api_diagnoses_a_wrong_smtp_port(stack, new_team):
    answer = broken_send(stack, new_team, port=stack.mail_servers.ports.pop3)
    assert answer["diagnosis"]["problem"] == "wrong_port"
    assert answer["diagnosis"]["message"] == answer["error"]["message"] and answer["debug"]


def test_the_api_diagnoses_a_refusing_host(stack, new_team):
    # A refused connection is temporary: the mail is deferred (202), with the same diagnosis.
    answer = broken_send(stack, new_team, 202, port=closed_port())
    assert answer["mail"]["status"] == "deferred"
    assert answer["diagnosis"]["problem"] == "refused"


def test_the_api_diagnoses_tls_expected_but_not_offered(stack, new_team):
    with without_starttls(stack, "smtp") as proxy:
        answer = broken_send(stack, new_team, port=proxy.port)
    assert answer["diagnosis"]["problem"] == "tls_not_offered"


def test_the_api_diagnoses_a_wrong_password_without_showing_it(stack, new_team):
    target = new_team()
    team = new_team(mail_password="wrong-pw-3")
    status, answer = send(
        stack, team, {"to": target.mailbox.address, "body_text": "x"}, query={"debug": "true"}
    )
    assert status == 502
    assert (
        answer["diagnosis"]["problem"] == "auth_failed" and "app password" in answer["diagnosis"]["message"]
    )
    assert "wrong-pw-3" not in json.dumps(answer)


def test_the_pull_debug_answer_diagnoses_each_broken_account(stack, new_team):
    pop3 = {"host": stack.mail_servers.host, "port": stack.mail_servers.ports.smtp, "security": "none"}
    team = new_team(pop3=pop3)
    _, answer = pull(
        stack, team, account=team.account, query={"debug": "true"}, caller=claims(team.team, user="u")
    )
    (found,) = answer["diagnosis"]
    assert found["problem"] == "wrong_port" and found["account"] == team.account
    assert answer["accounts"][0]["problem"] == "wrong_port"


@pytest.mark.parametrize("protocol", ["pop3", "smtp"])
def test_make_check_reads_the_local_stack_description(stack, tmp_path, protocol):
    described = tmp_path / "stack.json"
    described.write_text(json.dumps(stack.info))
    command = [sys.executable, "-m", "local.check", protocol, "--team", "demo", "--account", "demo"]
    done = subprocess.run(
        [*command, "--stack-json", str(described)],
        capture_output=True,
        text=True,
        timeout=60,
        env={key: value for key, value in os.environ.items() if key != "AWS_ENDPOINT_URL"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stdout + done.stderr
