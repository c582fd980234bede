"""Builders shared by unit and integration tests."""

from __future__ import annotations

import importlib.util
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

Invoke = Callable[[dict[str, Any]], Any]
"""Hands an event to a function and returns its answer: a handler in this process, or the local stack's."""


def accepted(listener: socket.socket) -> Iterator[socket.socket]:
    """Each connection the listening socket accepts, until it is closed: a fake server's loop."""
    while True:
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        yield connection


def wait_until[T](
    condition: Callable[[], T],
    *,
    timeout: float = 10.0,
    interval: float = 0.05,
    failure: str | Callable[[], str] = "",
    pause: Callable[[float], None] = time.sleep,
) -> T:
    """What `condition` answers once it is true (polled every `interval` seconds, waiting with
    `pause`); after `timeout` seconds an AssertionError saying `failure` (a text, or made then:
    the state at the failure)."""
    deadline = time.monotonic() + timeout
    while not (answer := condition()):
        if time.monotonic() > deadline:
            said = failure() if callable(failure) else failure
            raise AssertionError(f"not so after {timeout} s: {said}")
        pause(interval)
    return answer


def claims(*teams: str, user: str = "user@example.test") -> dict[str, str]:
    """Claims as API Gateway (REST) hands them to a function: strings, groups as "[a b]"."""
    return {"email": user, "cognito:username": user, "cognito:groups": "[" + " ".join(teams) + "]"}


def rest_event(
    method: str,
    path: str,
    *,
    resource: str,
    path_parameters: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: str | None = None,
    caller: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A REST API (payload v1) proxy event, for calling a handler directly. Headers go in both
    forms, as API Gateway hands them over (Powertools reads multiValueHeaders when present)."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {name: [value] for name, value in headers.items()},
        "queryStringParameters": query,
        "multiValueQueryStringParameters": {k: [v] for k, v in query.items()} if query else None,
        "pathParameters": path_parameters,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": resource,
            "httpMethod": method,
            "path": "/v1" + path,
            "stage": "v1",
            "requestId": str(uuid.uuid4()),
            "requestTimeEpoch": int(time.time() * 1000),
            "identity": {"sourceIp": "127.0.0.1"},
            "authorizer": {"claims": caller} if caller else None,
        },
        "body": body,
        "isBase64Encoded": False,
    }


def call_api(
    invoke: Invoke,
    method: str,
    resource: str,
    *,
    params: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: Any = None,
    caller: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """Calls a function as API Gateway (REST) would for the route `resource` ("/api/core/mail/{mail_id}")
    with `params` in its path; a body that is not a string goes as JSON. Answers the status and the
    JSON body ({} when it is empty)."""
    event = rest_event(
        method,
        resource.format_map(params or {}),
        resource=resource,
        path_parameters=params,
        query=query,
        body=body if body is None or isinstance(body, str) else json.dumps(body),
        caller=caller,
        headers=headers,
    )
    answer = invoke(event)
    return answer["statusCode"], json.loads(answer["body"] or "{}")


class LambdaContext:
    """The context Lambda hands a handler: a 30-second StoreFunction, freshly started."""

    function_name = "StoreFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:StoreFunction"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load_function(function: str, module: str = "") -> ModuleType:
    """A fresh copy of functions/<function>/app.py, imported as Lambda would (its own module,
    named `module` if given, as the local stack names each execution environment's copy)."""
    spec = importlib.util.spec_from_file_location(
        module or f"unit_{function}_app", ROOT / "functions" / function / "app.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def handler(app: ModuleType) -> Invoke:
    """Invokes a loaded function's lambda_handler in this process."""
    return lambda event: app.lambda_handler(event, LambdaContext())


class Clock:
    """A clock the test sets: calling it tells `now` (seconds or a datetime); sleep() and advance() move it."""

    def __init__(self, now: Any = 1000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> Any:
        return self.now

    def advance(self, **delta: float) -> None:
        step = timedelta(**delta)
        self.now += step if isinstance(self.now, datetime) else step.total_seconds()

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds=seconds)


def account_config(**changes: Any) -> dict[str, Any]:
    """A mail account as a team secret holds it: desk@example.test on loopback, plain, with `changes`."""
    return {
        "mail_from": "desk@example.test",
        "mail_username": "desk@example.test",
        "mail_password": "pw",
        "smtp": {"host": "127.0.0.1", "port": 25, "security": "none"},
        "pop3": {"host": "127.0.0.1", "port": 110, "security": "none"},
        **changes,
    }


def mail_account(**changes: Any) -> Any:
    """A team's MailAccount on loopback (desk@example.test), with `changes` over the defaults."""
    from mailcore.models import MailAccount

    return MailAccount.model_validate(account_config(**changes))


def outgoing_mail(**fields: Any) -> Any:
    """A stored outgoing Mail of team t, account desk (fields override)."""
    from datetime import UTC, datetime

    from mailcore.models import Direction, Mail, MailStatus

    defaults: dict[str, Any] = {
        "id": "m1",
        "team": "t",
        "account": "desk",
        "direction": Direction.OUT,
        "status": MailStatus.SENDING,
        "created_at": datetime(2026, 11, 24, 12, 0, tzinfo=UTC),
    }
    return Mail(**(defaults | fields))
