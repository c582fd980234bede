"""POP3 and SMTP logins with XOAUTH2 (both POP3 forms) against a password login, on the private
Dovecot/Postfix with its oauth2 passdb asking the local token endpoint (introspection) each time.

    .venv/bin/python -m bench.oauth2_login

Prints the median time of each login kind as a ratio to the PLAIN password login measured in
the same run (absolute times drift between machines; ratios hold better).
"""

from __future__ import annotations

import base64
import poplib
import secrets
import shutil
import smtplib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from mailcore.models import OAuth2Auth, OAuth2Provider
from mailcore.oauth2 import TokenBroker
from pydantic import SecretStr

from local.mailservers import Mailbox, MailServers
from local.oauth2_server import OAuth2Server

ROUNDS = 60


def median_ms(action: Callable[[], None]) -> float:
    times = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        action()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main() -> None:
    provider = OAuth2Server().start()
    root = Path(tempfile.mkdtemp(prefix="bo2-", dir="/tmp"))
    root.chmod(0o755)
    servers = MailServers(root, oauth2_introspection_url=provider.introspection_url)
    box = Mailbox("bench@example.test", secrets.token_urlsafe(12))
    servers.add_mailboxes([box])
    servers.start()
    try:
        client = provider.add_client(box.address)
        token = provider.token(
            {
                "grant_type": "client_credentials",
                "client_id": client.client_id,
                "client_secret": client.client_secret,
            }
        )[1]["access_token"]
        raw = f"user={box.address}\x01auth=Bearer {token}\x01\x01"
        payload = base64.b64encode(raw.encode()).decode()

        def pop3_plain() -> None:
            pop = poplib.POP3(servers.host, servers.ports.pop3)
            pop.user(box.address)
            pop.pass_(box.password)
            pop.quit()

        def pop3_two_step() -> None:
            pop = poplib.POP3(servers.host, servers.ports.pop3)
            pop._shortcmd("AUTH XOAUTH2")  # type: ignore[attr-defined]
            pop._shortcmd(payload)  # type: ignore[attr-defined]
            pop.quit()

        def pop3_one_line() -> None:
            pop = poplib.POP3(servers.host, servers.ports.pop3)
            pop._shortcmd("AUTH XOAUTH2 " + payload)  # type: ignore[attr-defined]
            pop.quit()

        def smtp_xoauth2() -> None:
            with smtplib.SMTP(servers.host, servers.ports.smtp, local_hostname="bench") as smtp:
                smtp.ehlo()
                smtp.auth("XOAUTH2", lambda challenge=None: raw if challenge is None else "")

        def smtp_plain() -> None:
            with smtplib.SMTP(servers.host, servers.ports.smtp, local_hostname="bench") as smtp:
                smtp.ehlo()
                smtp.login(box.address, box.password)

        def token_fetch() -> None:
            broker.forget("bench", "bench")
            broker.access_token("bench", "bench", auth)

        broker = TokenBroker()
        auth = OAuth2Auth(
            mode="oauth2",
            provider=OAuth2Provider.GENERIC,
            client_id=client.client_id,
            client_secret=SecretStr(client.client_secret),
            token_url=provider.token_url,
            scope="mail",
        )
        for baseline_name, baseline_action, others in [
            (
                "POP3 USER/PASS login",
                pop3_plain,
                [
                    ("POP3 AUTH XOAUTH2, two-step", pop3_two_step),
                    ("POP3 AUTH XOAUTH2, one-line", pop3_one_line),
                    ("token fetch over HTTP (TokenBroker, no cache)", token_fetch),
                ],
            ),
            (
                "SMTP AUTH PLAIN (Postfix -> Dovecot)",
                smtp_plain,
                [("SMTP AUTH XOAUTH2 (Postfix -> Dovecot)", smtp_xoauth2)],
            ),
        ]:
            baseline = median_ms(baseline_action)
            print(f"baseline: {baseline_name}: {baseline:.2f} ms (median of {ROUNDS})")
            for name, action in others:
                print(f"  {name:48s} {median_ms(action) / baseline:5.2f}x")
    finally:
        servers.stop()
        provider.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
