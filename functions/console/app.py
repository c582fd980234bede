"""The web console (docs/console.md): its static files under /console, and /console/config.json
saying where to sign in. No token needed for these routes: the files hold no data; every call the
console makes goes to the API with the signed-in user's ID token."""

import json
import mimetypes
import os
from pathlib import Path
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.utilities.typing import LambdaContext

app = APIGatewayRestResolver()

STATIC = Path(__file__).resolve().parent / "static"
# The console's own code only: no inline script, no other origin but Cognito's sign-in endpoint.
# Images may come from anywhere only because a mail's remote images, once the reader allows them,
# load in the mail's frame (which inherits this policy and adds its own, stricter one).
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: https: http:; connect-src 'self' {cognito}; frame-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def cognito_url() -> str:
    """Where the browser signs in: the region's Cognito endpoint, or the local stack's moto."""
    local = os.environ.get("AWS_ENDPOINT_URL")
    region = os.environ.get("AWS_REGION", "us-east-1")
    return (local.rstrip("/") + "/") if local else f"https://cognito-idp.{region}.amazonaws.com/"


def client_id() -> str:
    """The app client the console signs in with: template.yaml hands over its id (the stack's
    own client, or UserPoolClientId with an existing pool); empty leaves the console without sign-in."""
    return os.environ.get("CONSOLE_CLIENT_ID", "")


def _answer(status: int, content_type: str, body: str) -> Response[str]:
    origin = cognito_url().rstrip("/")
    headers = {
        "Content-Security-Policy": POLICY.format(cognito=origin),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }
    return Response(status_code=status, content_type=content_type, body=body, headers=headers)


@app.get("/console", include_in_schema=False)
def index() -> Response[str]:
    return static_file("index.html")


@app.get("/console/<file>", include_in_schema=False)
def static_file(file: str) -> Response[str]:
    if file == "config.json":
        config = {"cognito_url": cognito_url(), "client_id": client_id()}
        return _answer(200, "application/json", json.dumps(config))
    path = (STATIC / file).resolve()
    if not path.is_relative_to(STATIC) or not path.is_file():
        missing = {
            "error": {"code": "not_found", "message": f"the console has no file {file!r}", "field": "file"}
        }
        return _answer(404, "application/json", json.dumps(missing))
    content_type = (
        "text/javascript" if path.suffix == ".js" else mimetypes.guess_type(path.name)[0] or "text/plain"
    )
    return _answer(200, f"{content_type}; charset=utf-8", path.read_text())


def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
