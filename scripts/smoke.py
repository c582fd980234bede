"""Smoke test of a deployed mail service through its public API only (`make smoke`).

    make smoke API=<base url, e.g. https://abc.execute-api.eu-west-1.amazonaws.com/v1>
               TOKEN=<a Cognito ID token of a team member> ACCOUNT=<the team's account>
               [TO=<the account's own address, when ACCOUNT is not an address>]

Stores an attachment, sends a mail with it from the account to itself, pulls the account until the
mail is there, reads it and downloads its attachment. Prints each step with its time and stops
with a non-zero exit status at the first step that fails. The token is never printed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from typing import Any

PULL_SECONDS = 120.0  # how long the pull waits for the mail to arrive


class StepFailed(Exception):
    pass


class Api:
    def __init__(self, base: str, token: str, timeout: float = 35.0) -> None:
        self.base, self.token, self.timeout = base.rstrip("/"), token, timeout

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.loads(answer.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read()[:500].decode("utf-8", "replace")
            raise StepFailed(f"{method} {path}: HTTP {error.code} {detail}") from None
        except (urllib.error.URLError, TimeoutError) as error:
            raise StepFailed(f"{method} {path}: {error}") from None


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=35) as answer:  # a presigned URL: no token
            return bytes(answer.read())
    except (urllib.error.URLError, TimeoutError) as error:
        raise StepFailed(f"download of the attachment: {error}") from None


def _steps(api: Api, account: str, to: str) -> list[tuple[str, Callable[[dict[str, Any]], str]]]:
    marker = uuid.uuid4().hex[:12]
    content = f"smoke {marker}\n".encode()
    subject = f"smoke test {marker}"

    def upload(state: dict[str, Any]) -> str:
        encoded = base64.b64encode(content).decode()
        answer = api.call(
            "POST", "/api/core/files", {"name": "smoke.txt", "content_type": "text/plain", "content": encoded}
        )
        state["file"] = answer["file"]["id"]
        return f"file {state['file']}"

    def send(state: dict[str, Any]) -> str:
        body = {"to": to, "subject": subject, "body_text": "smoke test", "attachments": [state["file"]]}
        answer = api.call("POST", f"/api/core/mail/send/{account}", body)
        return f"mail {answer['mail']['id']} {answer['mail']['status']}"

    def pull(state: dict[str, Any]) -> str:
        deadline = time.monotonic() + PULL_SECONDS
        while time.monotonic() < deadline:
            report = api.call("POST", f"/api/core/mail/pull/{account}")["accounts"][0]
            if report.get("error"):
                raise StepFailed(f"pull: {report['error']}")
            for mail_id in report.get("mail_ids") or []:
                if api.call("GET", f"/api/core/mail/{mail_id}")["mail"].get("subject") == subject:
                    state["mail"] = mail_id
                    return f"mail {mail_id} arrived"
            time.sleep(2)
        raise StepFailed(f"pull: the mail did not arrive within {PULL_SECONDS:.0f} s")

    def read(state: dict[str, Any]) -> str:
        mail = api.call("GET", f"/api/core/mail/{state['mail']}")["mail"]
        if not mail.get("attachments"):
            raise StepFailed("read: the pulled mail has no attachment")
        state["attachment"] = mail["attachments"][0]
        return f"subject {mail['subject']!r}, {len(mail['attachments'])} attachment(s)"

    def attachment(state: dict[str, Any]) -> str:
        stored = api.call("GET", f"/api/core/files/{state['attachment']}")["file"]
        if _download(stored["url"]) != content:
            raise StepFailed("attachment: its content differs from what was sent")
        return f"{stored['name']} ({stored['size']} bytes) matches"

    return [("upload", upload), ("send", send), ("pull", pull), ("read", read), ("attachment", attachment)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--api", required=True)
    parser.add_argument("--account", required=True)
    parser.add_argument("--to", default="", help="the account's address (default: ACCOUNT when it is one)")
    args = parser.parse_args(argv)
    token = os.environ.get("SMOKE_TOKEN", "")
    to = args.to or (args.account if "@" in args.account else "")
    if not token or not to:
        print("smoke: needs TOKEN, and TO when ACCOUNT is not an address", file=sys.stderr)
        return 2
    state: dict[str, Any] = {}
    total = time.monotonic()
    for name, step in _steps(Api(args.api, token), args.account, to):
        started = time.monotonic()
        try:
            outcome = step(state)
        except (StepFailed, KeyError, TypeError) as failure:
            print(f"FAIL {name:<10} {time.monotonic() - started:7.2f} s  {failure}")
            return 1
        print(f"ok   {name:<10} {time.monotonic() - started:7.2f} s  {outcome}")
    print(f"ok   {'all':<10} {time.monotonic() - total:7.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
