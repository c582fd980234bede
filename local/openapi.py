"""The API's OpenAPI document, merged by Powertools from the routes of every HTTP function that
template.yaml declares, and a Swagger UI page for it that needs no network (Powertools ships
the assets). `make openapi` rewrites docs/openapi.json; a test keeps it current."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aws_lambda_powertools.event_handler.openapi.merge import OpenAPIMerge
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

from local.template import Template

ROOT = Path(__file__).resolve().parent.parent
TITLE = "Mail service API"
VERSION = "1.0.0"


def openapi_document(template_path: Path = ROOT / "template.yaml") -> str:
    template = Template.load(template_path)
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
    for function_id in sorted(http_functions):
        spec = functions[function_id]
        merge.add_file(spec.code_dir / (spec.module.replace(".", "/") + ".py"), "app")
    return json.dumps(json.loads(merge.get_openapi_json_schema()), indent=2, sort_keys=True) + "\n"


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
