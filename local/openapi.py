"""The API's OpenAPI document, merged by Powertools from the routes of every HTTP function that
template.yaml declares, and a Swagger UI page for it that needs no network (Powertools ships
the assets). `make openapi` rewrites docs/openapi.json; a test keeps it current."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any
from unittest.mock import patch

from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

from local.aws import create_resources_elsewhere
from local.template import Template

ROOT = Path(__file__).resolve().parent.parent
TITLE = "Mail service API"
VERSION = "1.0.0"


def openapi_document(template_path: Path = ROOT / "template.yaml") -> str:
    template = Template.load(template_path, stack_name="openapi")
    # Importing a handler runs its init, which checks the function's settings: they name the
    # resources, whose values exist once created (here in a moto server of its own).
    create_resources_elsewhere(template)
    http_functions = {route.function_id for route in template.api_routes()}
    merge = OpenAPIMerge(
        title=TITLE,
        version=VERSION,
        description=(
            "Teams of an application send mail over SMTP and pull mail over POP3 through this API. "
            "Every call needs a Cognito ID token (Authorization: Bearer ...); the token's "
            "cognito:groups claim names the caller's teams."
        ),
        security_schemes={"cognito": HTTPBearer(bearerFormat="JWT", description="Cognito ID token")},
        security=[{"cognito": []}],
        on_conflict="error",
    )
    functions = template.functions()
    environment: dict[str, str] = {}
    for function_id in sorted(http_functions):
        spec = functions[function_id]
        environment |= spec.environment
        merge.add_file(spec.code_dir / (spec.module.replace(".", "/") + ".py"), "app")
    # Importing a handler runs its init, which reads the function's settings.
    with patch.dict(os.environ, environment):
        document = without_unanswered_422(json.loads(merge.get_openapi_json_schema()))
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


_POWERTOOLS_422 = "#/components/schemas/HTTPValidationError"


def without_unanswered_422(document: dict[str, Any]) -> dict[str, Any]:
    """Powertools declares 422 with its own schema on every validated route; the service answers
    invalid input with 400 (mailcore.api), so that 422 is dropped (a route's own 422, with the
    error body, stays), and the schemas nothing refers to any more with it."""
    for operations in document["paths"].values():
        for operation in operations.values():
            answer = operation["responses"].get("422", {})
            if (
                answer.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
                == _POWERTOOLS_422
            ):
                del operation["responses"]["422"]
    schemas = document["components"]["schemas"]
    while True:
        text = json.dumps(document)
        unused = [name for name in schemas if f'"#/components/schemas/{name}"' not in text]
        if not unused:
            return document
        for name in unused:
            del schemas[name]


def swagger_page(document: str) -> str:
    from aws_lambda_powertools.event_handler.openapi.swagger_ui.html import generate_swagger_html

    assets = (
        Path(sys.modules["aws_lambda_powertools.event_handler.openapi.merge"].__file__ or "").parent
        / "swagger_ui"
    )
    return generate_swagger_html(
        spec=document,
        swagger_js=(assets / "swagger-ui-bundle.min.js").read_text(),
        swagger_css=(assets / "swagger-ui.min.css").read_text(),
        swagger_base_url="",
        oauth2_config=None,
        persist_authorization=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="write the document to this file (else print it)")
    args = parser.parse_args()
    document = openapi_document()
    if args.write:
        args.write.write_text(document)
    else:
        sys.stdout.write(document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
