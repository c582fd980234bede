"""mail-check: tests a mail account the way the service uses it, and says what is wrong.

    mail-check pop3 --team sales --account sales          # the account in the team's secret
    mail-check smtp --system --send-to me@example.com     # the system mail configuration
    mail-check pop3 --host pop.example.com --port 995 --security ssl --user me@example.com \\
                    --password-env MAIL_PASSWORD            # or --password, or a prompt

It connects, negotiates TLS (certificates verified), logs in, and for POP3 lists the mailbox
(count, size, first UIDLs) or for SMTP optionally sends a test mail; it prints the conversation
with every credential redacted, and the diagnosis on failure. Exit status 0 only when the account
works; 1 when it does not; 2 when the configuration cannot be read.

Secrets come from Secrets Manager with the usual AWS configuration (profile, region,
AWS_ENDPOINT_URL); TEAM_SECRET_PREFIX, SYSTEM_MAIL_SECRET_NAME and MAIL_TLS_CA_FILE give defaults.
"""

from __future__ import annotations

import argparse
import getpass
import io
import os
import ssl
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

from pydantic import SecretStr, ValidationError

from mailcore.errors import MailServerError, MailServiceError, describe_validation_error
from mailcore.mime.build import build_message, new_message_id
from mailcore.models import MailAccount, ServerEndpoint
from mailcore.protocols import reach
from mailcore.protocols.deadline import Deadline
from mailcore.protocols.diagnose import diagnosis
from mailcore.protocols.pop3 import Pop3Session
from mailcore.protocols.smtp import SmtpAccount, SmtpSession, envelope_sender
from mailcore.protocols.tls import client_tls_context
from mailcore.protocols.transcript import Transcript
from mailcore.services.system import SystemMailConfig, load_system_config

LISTED_UIDLS = 5


class ConfigurationError(Exception):
    """The account to check cannot be found or read: exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mail-check",
        description="Tests a mail account (POP3 or SMTP) and says what is wrong.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    parser.add_argument("protocol", choices=["pop3", "smtp"])
    source = parser.add_argument_group("which account (one of)")
    source.add_argument("--team", help="team whose secret holds the account")
    source.add_argument("--account", help="account name in the team secret")
    source.add_argument("--system", action="store_true", help="the system mail configuration (SMTP)")
    source.add_argument("--host", help="server host, with --port, --security and --user")
    flags = parser.add_argument_group("an account given by flags")
    flags.add_argument("--port", type=int)
    flags.add_argument("--security", choices=["ssl", "starttls", "none"])
    flags.add_argument("--user", help="login user name")
    flags.add_argument("--password-env", metavar="VAR", help="read the password from this variable")
    flags.add_argument(
        "--password", help="the password (visible to other users of this machine; prefer --password-env)"
    )
    flags.add_argument("--from", dest="mail_from", help="sender address for --send-to (default: --user)")
    parser.add_argument("--send-to", metavar="ADDRESS", help="SMTP: send a test mail to this address")
    parser.add_argument(
        "--timeout", type=float, help="seconds per server answer (default: the account's, 15 with --host)"
    )
    parser.add_argument("--ca-file", default=os.environ.get("MAIL_TLS_CA_FILE", ""), help="extra trusted CA")
    parser.add_argument("--source-address", metavar="IP", help="connect from this local address")
    parser.add_argument(
        "--allow-networks",
        metavar="CIDRS",
        default=os.environ.get("MAIL_SERVER_NETWORKS", ""),
        help="internal networks the service may reach, as its MailServerNetworks (comma-separated)",
    )
    parser.add_argument(
        "--secret-prefix", default=os.environ.get("TEAM_SECRET_PREFIX", "mail-service/teams/")
    )
    parser.add_argument(
        "--system-secret", default=os.environ.get("SYSTEM_MAIL_SECRET_NAME", "mail-service/system")
    )
    return parser


def _allow_networks(cidrs: str) -> None:
    # The service's own rule (protocols/reach.py): an account it would refuse is refused here too.
    try:
        reach.allow_networks(reach.parse_networks(cidrs))
    except ValueError as error:
        raise ConfigurationError(f"--allow-networks: {error}") from None


def _account(args: argparse.Namespace) -> SmtpAccount | MailAccount:
    account = _configured_account(args)
    if args.timeout is not None and isinstance(account, MailAccount | SystemMailConfig):
        return account.model_copy(update={"timeout_seconds": args.timeout})
    return account


def _configured_account(args: argparse.Namespace) -> SmtpAccount | MailAccount:
    chosen = [bool(args.team or args.account), bool(args.system), bool(args.host)]
    if sum(chosen) != 1:
        raise ConfigurationError("name one account: --team and --account, --system, or --host")
    if args.team or args.account:
        if not (args.team and args.account):
            raise ConfigurationError("--team and --account go together")
        from mailcore.adapters.secretsmanager import SecretsManagerSecrets
        from mailcore.settings import SECRETS_MAX_AGE_SECONDS
        from mailcore.teams import TeamDirectory

        secrets = SecretsManagerSecrets(SECRETS_MAX_AGE_SECONDS)
        config = TeamDirectory(args.secret_prefix, secrets, list_max_age=SECRETS_MAX_AGE_SECONDS).team(
            args.team
        )
        if config is None:
            raise ConfigurationError(f"no secret {args.secret_prefix}{args.team} for team {args.team!r}")
        if args.account not in config.accounts:
            known = ", ".join(sorted(config.accounts)) or "none"
            raise ConfigurationError(f"team {args.team!r} has no account {args.account!r} (it has: {known})")
        return config.accounts[args.account]
    if args.system:
        if args.protocol != "smtp":
            raise ConfigurationError("the system mail configuration has SMTP only")
        from mailcore.adapters.secretsmanager import SecretsManagerSecrets
        from mailcore.settings import SECRETS_MAX_AGE_SECONDS

        return load_system_config(SecretsManagerSecrets(SECRETS_MAX_AGE_SECONDS), args.system_secret)
    missing = [flag for flag in ("port", "security", "user") if getattr(args, flag) is None]
    if missing:
        raise ConfigurationError("with --host, give also " + ", ".join(f"--{flag}" for flag in missing))
    endpoint = {"host": args.host, "port": args.port, "security": args.security}
    try:
        return MailAccount(
            mail_from=args.mail_from or args.user,
            mail_username=args.user,
            mail_password=SecretStr(_password(args)),
            smtp=ServerEndpoint.model_validate(endpoint),
            pop3=ServerEndpoint.model_validate(endpoint),
            timeout_seconds=args.timeout or 15.0,
        )
    except ValidationError as error:
        raise ConfigurationError(describe_validation_error(error)) from None


def _password(args: argparse.Namespace) -> str:
    if args.password_env:
        if args.password_env not in os.environ:
            raise ConfigurationError(f"the variable {args.password_env} is not set")
        return os.environ[args.password_env]
    if args.password is not None:
        return str(args.password)
    if sys.stdin.isatty():
        return getpass.getpass(f"password of {args.user}: ")
    return ""


@dataclass(frozen=True)
class Connection:
    transcript: Transcript
    tls_context: ssl.SSLContext
    source_address: tuple[str, int] | None = None
    # An OAuth2 account's access token (the accounts API gets one before it checks).
    access_token: str | None = None
    # When the session must end, however slowly the server answers (the accounts API's check).
    deadline: Deadline | None = None

    def open[Session: (Pop3Session, SmtpSession)](self, session: type[Session], config: Any) -> Session:
        """A POP3 or SMTP session of that account configuration over this connection (not logged in until entered)."""
        return session(
            config,
            transcript=self.transcript,
            tls_context=self.tls_context,
            access_token=self.access_token,
            source_address=self.source_address,
            deadline=self.deadline,
        )


def check_pop3(config: MailAccount, connection: Connection, out: TextIO) -> None:
    with connection.open(Pop3Session, config) as session:
        count, size = session.stat()
        listing = session.listing()
        out.write(f"mailbox: {count} messages, {size} bytes\n")
        for number, uidl in listing[:LISTED_UIDLS]:
            out.write(f"  {number}: {uidl}\n")
        if len(listing) > LISTED_UIDLS:
            out.write(f"  ... and {len(listing) - LISTED_UIDLS} more\n")


def check_smtp(config: SmtpAccount, connection: Connection, send_to: str | None, out: TextIO) -> None:
    with connection.open(SmtpSession, config) as session:
        if not send_to:
            out.write("logged in; no test mail sent (add --send-to ADDRESS to send one)\n")
            return
        now = datetime.now(UTC)
        message = build_message(
            mail_from=config.mail_from,
            to=[send_to],
            cc=[],
            reply_to=[],
            subject=f"mail-check test mail {now:%Y-%m-%d %H:%M:%S} UTC",
            body_text=f"This test mail was sent by mail-check from {envelope_sender(config)}.\n",
            body_html=None,
            attachments=[],
            message_id=new_message_id(config.mail_from),
            date=now,
        )
        delivery = session.send(message.as_bytes(), [send_to])
        if delivery.refused:
            raise MailServerError(
                f"the server refused {send_to}: {delivery.refused[send_to]}", problem="recipients_refused"
            )
        out.write(f"test mail to {send_to} accepted: {delivery.reply}\n")


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    args = _parser().parse_args(argv)
    try:
        _allow_networks(args.allow_networks)
        account = _account(args)
    except (ConfigurationError, MailServiceError) as error:
        out.write(f"mail-check: {error}\n")
        return 2
    transcript = Transcript()
    connection = Connection(
        transcript,
        client_tls_context(args.ca_file),
        (args.source_address, 0) if args.source_address else None,
    )
    failure: MailServerError | None = None
    result = io.StringIO()
    try:
        if args.protocol == "pop3":
            assert isinstance(account, MailAccount)
            check_pop3(account, connection, result)
        else:
            check_smtp(account, connection, args.send_to, result)
    except MailServerError as error:
        failure = error
    for line in transcript.lines:
        out.write(line + "\n")
    out.write("\n" + result.getvalue())
    if failure is not None:
        found = diagnosis(failure)
        out.write(f"FAILED ({found['problem']}): {found['message']}\n")
        return 1
    out.write(f"OK: the {args.protocol.upper()} account works\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
