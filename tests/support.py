"""Builders shared by unit and integration tests."""

from __future__ import annotations

import time
import uuid
from typing import Any


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


def mail_account(**changes: Any) -> Any:
    """A team's MailAccount on loopback (desk@example.test), with `changes` over the defaults."""
    from mailcore.models import MailAccount

    return MailAccount.model_validate(
        {
            "mail_from": "desk@example.test",
            "mail_username": "desk@example.test",
            "mail_password": "pw",
            "smtp": {"host": "127.0.0.1", "port": 25, "security": "none"},
            "pop3": {"host": "127.0.0.1", "port": 110, "security": "none"},
            **changes,
        }
    )


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
