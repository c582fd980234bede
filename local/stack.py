"""The local stack (`make run`): the whole service on 127.0.0.1, read from template.yaml.

moto in server mode holds the tables, bucket, queues, bus, secrets and the Cognito user pool the
template declares; private Dovecot and Postfix serve a demo mailbox; a gateway routes HTTP
requests to the handlers as API Gateway would, and the template's schedules fire on their rate.
The integration tests start the very same stack (on free ports) through `LocalStack`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from local import iam
from local.aws import cognito_user, create_resources, id_token, start_moto_server
from local.environment import use_local_aws
from local.event_sources import EventSources
from local.gateway import CognitoVerifier, Isolation, LocalGateway, merged_environment
from local.mailservers import Mailbox, MailServerPorts, MailServers
from local.oauth2_server import OAuth2Server
from local.template import Template

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "template.yaml"
OPENAPI = ROOT / "docs" / "openapi.json"
DEFAULT_STATE = ROOT / ".local"
REGION = "us-east-1"

# How the local stack stands in for every resource type CloudFormation creates from template.yaml
# (its translation). A type missing here is reported at start and fails
# tests/unit/test_deployment_shape.py: a new resource type must say how it runs locally.
ENGINE = "created by moto's CloudFormation (local/engine.py)"
ADAPTER = "created in moto by its adapter (local/adapters.py)"
LOCAL_STAND_INS: dict[str, str] = {
    "AWS::DynamoDB::Table": ENGINE + "; TTL and PITR by its adapter",
    "AWS::S3::Bucket": ENGINE + "; versioning, public access block, ownership by its adapter",
    "AWS::SQS::Queue": ENGINE,
    "AWS::Events::EventBus": ENGINE,
    "AWS::KMS::Key": ENGINE + " (key policy stored, not evaluated)",
    "AWS::IAM::Role": ENGINE + "; every AWS call checked against it by local/iam.py",
    "AWS::S3::BucketPolicy": ADAPTER + " (without the TLS-only Deny: moto is HTTP here)",
    "AWS::Cognito::UserPool": ADAPTER + " (its Lambda trigger is not wired)",
    "AWS::Cognito::UserPoolClient": ADAPTER,
    "AWS::Lambda::Function": "worker processes bounded by its MemorySize, local/execution.py (FunctionRuntime)",
    "AWS::Lambda::LayerVersion": "its folder on sys.path",
    "AWS::ApiGateway::RestApi": "local/gateway.py, from its OpenAPI body",
    "AWS::ApiGateway::Deployment": "local/gateway.py (one stage)",
    "AWS::ApiGateway::Stage": "local/gateway.py (served at / and /<stage>/)",
    "AWS::Lambda::Permission": "not needed: the gateway and the drivers invoke in-process",
    "AWS::Lambda::EventSourceMapping": "polled by local/event_sources.py",
    "AWS::Events::Rule": "a moto rule with a local queue target, polled by local/event_sources.py",
    "AWS::Scheduler::Schedule": "a timer thread of the stack (rate expressions only)",
    "AWS::Lambda::Version": "not emulated: every local environment imports the handler (no snapshot)",
    "AWS::Lambda::Alias": "not emulated: triggers invoke the function itself",
    "AWS::Lambda::EventInvokeConfig": "retries and OnFailure queue of asynchronous events, local/event_sources.py",
}

DEMO_TEAM = "demo"
DEMO_ACCOUNT = "demo"
OAUTH_ACCOUNT = "oauth"
DEMO_DOMAIN = "example.test"
MEMBER_EMAIL = "member@example.test"
OUTSIDER_EMAIL = "outsider@example.test"
# Administrators of a team are also in its group "<team>-admin" (docs/accounts.md).
ADMIN_EMAIL = "admin@example.test"


@dataclass
class StackPorts:
    api: int = 3000
    moto: int = 4566
    oauth2: int = 2980  # the local OAuth2 token endpoint (local/oauth2_server.py)
    mail: MailServerPorts = field(
        default_factory=lambda: MailServerPorts(pop3=2110, pop3s=2995, imap=2143, smtp=2587, smtps=2465)
    )

    @classmethod
    def free(cls) -> StackPorts:
        return cls(api=0, moto=0, oauth2=0, mail=MailServerPorts.free())


def _stable_secrets(state: Path) -> dict[str, str]:
    """Passwords of the demo mailbox and users: made once per checkout, kept across runs."""
    path = state / "secrets.json"
    if path.exists():
        known = dict(json.loads(path.read_text()))
        if "system" in known:
            if "admin" not in known:  # made by an older checkout
                known["admin"] = "Admin-" + secrets.token_urlsafe(9) + "1!"
                path.write_text(json.dumps(known))
            return known
    made = {
        "mailbox": secrets.token_urlsafe(12),
        "member": "Member-" + secrets.token_urlsafe(9) + "1!",
        "outsider": "Outsider-" + secrets.token_urlsafe(9) + "1!",
        "system": secrets.token_urlsafe(12),
        "admin": "Admin-" + secrets.token_urlsafe(9) + "1!",
    }
    path.write_text(json.dumps(made))
    path.chmod(0o600)
    return made


class LocalStack:
    def __init__(
        self,
        state: Path = DEFAULT_STATE,
        *,
        ports: StackPorts | None = None,
        parameter_overrides: dict[str, str] | None = None,
        run_schedules: bool = True,
        isolation: Isolation = "process",
    ) -> None:
        self.state = state
        # "process": each function in worker processes bounded by its MemorySize (local/execution.py);
        # "thread": in this process, for tests that patch the service (tests/integration/conftest.py).
        self.isolation: Isolation = isolation
        self.ports = ports or StackPorts()
        # Its Postfix and Dovecot listen on loopback, which a deployment's functions may not reach.
        self.parameter_overrides = {"MailServerNetworks": "127.0.0.0/8", **(parameter_overrides or {})}
        self.run_schedules = run_schedules
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.moto: Any = None
        self.gateway: LocalGateway | None = None
        self.mail_servers: MailServers | None = None
        self.oauth2: OAuth2Server | None = None
        self.event_sources: EventSources | None = None
        self.driven: list[str] = []
        self.info: dict[str, Any] = {}
        self._environment_before: dict[str, str] | None = None

    # --- start and stop -------------------------------------------------------------------
    def start(self) -> dict[str, Any]:
        self._environment_before = dict(os.environ)  # stop() gives the process its own back
        self.state.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o755)  # Postfix and Dovecot refuse folders others cannot enter
        passwords = _stable_secrets(self.state)
        iam.install()  # before any client exists: every client made from here on is checked
        use_local_aws(REGION)
        self.moto, endpoint = start_moto_server(self.ports.moto)
        use_local_aws(REGION, endpoint)
        self.session = boto3.session.Session(region_name=REGION)
        self.template = Template.load(
            TEMPLATE, parameter_overrides=self.parameter_overrides, region=REGION, endpoint_url=endpoint
        )
        self.physical = create_resources(self.template, self.session, endpoint)
        for type_ in sorted(
            {r["Type"] for r in self.template.translated().resources.values()} - set(LOCAL_STAND_INS)
        ):
            print(
                f"local stack: {type_} has no local stand-in (local/stack.py LOCAL_STAND_INS)",
                file=sys.stderr,
            )

        (self.state / "mail").mkdir(mode=0o755, exist_ok=True)
        self.oauth2 = OAuth2Server(port=self.ports.oauth2).start()
        self.mail_servers = MailServers(
            self.state / "mail",
            domain=DEMO_DOMAIN,
            ports=self.ports.mail,
            oauth2_introspection_url=self.oauth2.introspection_url,
        )
        mailbox = Mailbox(f"{DEMO_ACCOUNT}@{DEMO_DOMAIN}", passwords["mailbox"])
        system_mailbox = Mailbox(f"noreply@{DEMO_DOMAIN}", passwords["system"])
        # Its password is never used: the account logs in with OAuth2 tokens only.
        oauth_mailbox = Mailbox(f"{OAUTH_ACCOUNT}@{DEMO_DOMAIN}", secrets.token_urlsafe(12))
        self.mail_servers.add_mailboxes([mailbox, system_mailbox, oauth_mailbox])
        self.mail_servers.start()

        environment = self.function_environment()
        environment["MAIL_TLS_CA_FILE"] = str(self.mail_servers.ca_file)
        os.environ.update(environment)
        from mailcore import wiring

        wiring.reset()

        self.team_secret_prefix = environment["TEAM_SECRET_PREFIX"]
        self.put_team_secret(
            DEMO_TEAM,
            {
                "type": "mail",
                "accounts": {
                    DEMO_ACCOUNT: self.account_config(mailbox),
                    OAUTH_ACCOUNT: self.oauth_account_config(oauth_mailbox.address),
                },
            },
        )
        self.put_secret(
            environment["SYSTEM_MAIL_SECRET_NAME"],
            {
                "host": self.mail_servers.host,
                "port": self.mail_servers.ports.smtp,
                "security": "starttls",
                "username": system_mailbox.address,
                "password": system_mailbox.password,
                "from_address": system_mailbox.address,
                "from_name": "Mail service (local)",
            },
        )
        pool_id, client_id = self.user_pool()
        cognito_user(
            self.session,
            endpoint,
            pool_id,
            client_id,
            email=MEMBER_EMAIL,
            password=passwords["member"],
            groups=[DEMO_TEAM],
        )
        cognito_user(
            self.session,
            endpoint,
            pool_id,
            client_id,
            email=OUTSIDER_EMAIL,
            password=passwords["outsider"],
            groups=[],
        )
        cognito_user(
            self.session,
            endpoint,
            pool_id,
            client_id,
            email=ADMIN_EMAIL,
            password=passwords["admin"],
            groups=[DEMO_TEAM, DEMO_TEAM + "-admin"],
        )

        verifier = CognitoVerifier(endpoint, pool_id, client_id, REGION)
        self.gateway = LocalGateway(
            self.template,
            port=self.ports.api,
            authorizer=verifier,
            openapi_path=OPENAPI if OPENAPI.exists() else None,
            check_iam=True,
            isolation=self.isolation,
            forget_process_state=wiring.reset,
        )
        self.gateway.start()
        if self.run_schedules:
            self._start_schedules()
        self.event_sources = EventSources(self.template, self.session, self.invoke, region=REGION)
        self.driven = self.event_sources.start()

        servers = self.mail_servers
        self.info = {
            "api_url": self.gateway.url,
            "aws_endpoint": endpoint,
            "region": REGION,
            "team": DEMO_TEAM,
            "account": DEMO_ACCOUNT,
            "mailbox": mailbox.address,
            "pop3": {
                "host": servers.host,
                "port": servers.ports.pop3s,
                "security": "ssl",
                "user": mailbox.address,
                "password": mailbox.password,
            },
            "smtp": {
                "host": servers.host,
                "port": servers.ports.smtp,
                "security": "starttls",
                "user": mailbox.address,
                "password": mailbox.password,
            },
            "oauth_account": {
                "account": OAUTH_ACCOUNT,
                "mailbox": oauth_mailbox.address,
                "token_url": self.oauth2.token_url,
                "introspection_url": self.oauth2.introspection_url,
                "auth": "client credentials (like a Microsoft 365 app-only account); see the team secret",
            },
            "ca_file": str(servers.ca_file),
            "user_pool_id": pool_id,
            "user_pool_client_id": client_id,
            "users": {
                "member": {"email": MEMBER_EMAIL, "password": passwords["member"]},
                "outsider": {"email": OUTSIDER_EMAIL, "password": passwords["outsider"]},
                "admin": {"email": ADMIN_EMAIL, "password": passwords["admin"]},
            },
            "tokens": {
                "member": self.token(MEMBER_EMAIL, passwords["member"]),
                "outsider": self.token(OUTSIDER_EMAIL, passwords["outsider"]),
                "admin": self.token(ADMIN_EMAIL, passwords["admin"]),
            },
            "team_secret_prefix": self.team_secret_prefix,
            "environment": environment,
            "resources": self.physical,
            # `make invoke` runs a function under the same role (KMS key ids are moto's).
            "roles": {
                function_id: dataclasses.asdict(self.template.execution_role(function_id))
                for function_id in self.template.functions()
            },
            "pid": os.getpid(),
        }
        return self.info

    def stop(self) -> None:
        self._stopping.set()
        if self.event_sources is not None:
            self.event_sources.stop()
        if self.gateway is not None:
            self.gateway.stop()
        if self.mail_servers is not None:
            self.mail_servers.stop()
        if self.oauth2 is not None:
            self.oauth2.stop()
        if self.moto is not None:
            self.moto.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        if self._environment_before is not None:
            # Code of this process that runs after the stack must not talk to its stopped moto.
            os.environ.clear()
            os.environ.update(self._environment_before)
            self._environment_before = None
            from mailcore import wiring

            wiring.reset()

    # --- what tests and the README's examples use ------------------------------------------
    def function_environment(self) -> dict[str, str]:
        return merged_environment(self.template.functions().values())

    def account_config(self, mailbox: Mailbox, **changes: Any) -> dict[str, Any]:
        assert self.mail_servers is not None
        host, ports = self.mail_servers.host, self.mail_servers.ports
        config: dict[str, Any] = {
            "mail_from": f"Demo Team <{mailbox.address}>",
            "mail_username": mailbox.address,
            "mail_password": mailbox.password,
            "smtp": {"host": host, "port": ports.smtp, "security": "starttls"},
            "pop3": {"host": host, "port": ports.pop3s, "security": "ssl"},
            "leave_on_server": False,
        }
        config.update(changes)
        return config

    def oauth_account_config(
        self, address: str, *, refresh_token: bool = False, **changes: Any
    ) -> dict[str, Any]:
        """An account of `address` in auth mode oauth2 against the local token endpoint: a new
        client of its own; client credentials (Microsoft app-only style), or with `refresh_token`
        a refresh token (Google style)."""
        assert self.mail_servers is not None and self.oauth2 is not None
        client = self.oauth2.add_client(address)
        auth: dict[str, Any] = {
            "mode": "oauth2",
            "provider": "generic",
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "token_url": self.oauth2.token_url,
            "scope": "mail",
        }
        if refresh_token:
            auth["refresh_token"] = self.oauth2.issue_refresh_token(client)
        auth.update(changes.pop("auth", {}))
        config = self.account_config(Mailbox(address, ""), **changes)
        del config["mail_password"]
        config["auth"] = auth
        return config

    def put_team_secret(self, team: str, config: dict[str, Any]) -> None:
        self.put_secret(self.team_secret_prefix + team, config)

    def put_secret(self, name: str, config: dict[str, Any]) -> None:
        client = self.session.client("secretsmanager")
        value = json.dumps(config)
        try:
            client.create_secret(Name=name, SecretString=value)
        except client.exceptions.ResourceExistsException:
            client.put_secret_value(SecretId=name, SecretString=value)

    def user_pool(self) -> tuple[str, str]:
        return self.template.attribute("UserPool", "UserPoolId"), self.template.attribute(
            "UserPoolClient", "ClientId"
        )

    def token(self, email: str, password: str) -> str:
        pool_id, client_id = self.user_pool()
        return id_token(self.session, pool_id, client_id, email=email, password=password)

    def invoke(self, function_id: str, event: dict[str, Any], *, asynchronous: bool = False) -> Any:
        assert self.gateway is not None
        return self.gateway.invoke(function_id, event, asynchronous=asynchronous)

    # --- event sources moto stores but never fires ------------------------------------------
    def _start_schedules(self) -> None:
        for function_id, name, properties in self.template.event_sources("Schedule"):
            seconds = rate_seconds(str(properties.get("ScheduleExpression", "")))
            if seconds is None:
                print(
                    f"local stack: schedule {name} ({properties.get('ScheduleExpression')}) is not a rate; not run"
                )
                continue
            raw_input = properties.get("Input")
            event = json.loads(raw_input) if isinstance(raw_input, str) else (raw_input or {})
            thread = threading.Thread(
                target=self._every, args=(seconds, function_id, event), name=f"schedule-{name}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def _every(self, seconds: float, function_id: str, event: dict[str, Any]) -> None:
        while not self._stopping.wait(seconds):
            try:
                self.invoke(function_id, event)
            except Exception as error:  # a failed run is logged; the next one comes on time
                print(f"local stack: scheduled {function_id} failed: {error}", file=sys.stderr)


def rate_seconds(expression: str) -> float | None:
    match = re.fullmatch(r"rate\((\d+)\s+(minute|minutes|hour|hours|day|days)\)", expression.strip())
    if not match:
        return None
    unit = {"minute": 60, "hour": 3600, "day": 86400}[match.group(2).rstrip("s")]
    return int(match.group(1)) * unit


def _describe(info: dict[str, Any]) -> str:
    token = info["tokens"]["member"]
    return f"""
The mail service runs on {info["api_url"]}  (Swagger UI: {info["api_url"]}/swagger)
  web console {info["api_url"]}/console (sign in as users.admin or users.member of .local/stack.json)
  demo team {info["team"]!r}, account {info["account"]!r}, mailbox {info["mailbox"]}
  POP3 {info["pop3"]["host"]}:{info["pop3"]["port"]} (TLS), SMTP {info["smtp"]["host"]}:{info["smtp"]["port"]} (STARTTLS)
  AWS (moto) at {info["aws_endpoint"]}; everything is described in .local/stack.json

  OAuth2 demo account {info["oauth_account"]["account"]!r} (mailbox {info["oauth_account"]["mailbox"]}) logs in
  with tokens from {info["oauth_account"]["token_url"]}

Send a mail to the demo mailbox, then pull it:
  TOKEN=$(jq -r .tokens.member .local/stack.json)
  curl -s -X POST {info["api_url"]}/api/core/mail/send/{info["account"]} -H "Authorization: Bearer $TOKEN" \\
       -H 'Content-Type: application/json' -d '{{"to": "{info["mailbox"]}", "subject": "Hello", "body_text": "Hi there"}}'
  curl -s -X POST {info["api_url"]}/api/core/mail/pull/{info["account"]} -H "Authorization: Bearer $TOKEN"

(member token: {token[:24]}...; Ctrl-C or `make stop` stops everything)
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stop", action="store_true", help="stop a running local stack")
    parser.add_argument("--state", type=Path, default=DEFAULT_STATE)
    args = parser.parse_args(argv)
    pid_file = args.state / "stack.pid"
    if args.stop:
        if not pid_file.exists():
            print("no local stack is running")
            return 0
        pid = int(pid_file.read_text())
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pid_file.unlink(missing_ok=True)
            print("no local stack is running")
            return 0
        for _ in range(100):
            if not pid_file.exists():
                break
            time.sleep(0.1)
        print("local stack stopped")
        return 0

    stack = LocalStack(args.state)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        info = stack.start()
        (args.state / "stack.json").write_text(json.dumps(info, indent=2))
        (args.state / "stack.json").chmod(0o600)
        pid_file.write_text(str(os.getpid()))
        print(_describe(info), flush=True)
        done.wait()
    finally:
        print("local stack: stopping", flush=True)
        stack.stop()
        pid_file.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
