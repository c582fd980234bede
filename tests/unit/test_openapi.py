from pathlib import Path

from local.openapi import openapi_document, swagger_page

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_committed_openapi_document_matches_the_routes():
    assert DOCUMENT.read_text() == openapi_document(), "run `make openapi` and commit docs/openapi.json"


def test_the_document_covers_every_route_of_the_template():
    import json

    paths = json.loads(openapi_document())["paths"]
    assert set(paths["/api/core/mail/pull/{account}"]) == {"get", "post"}
    assert "post" in paths["/api/core/mail/send/{account}"]


def test_the_swagger_page_needs_no_network():
    page = swagger_page(DOCUMENT.read_text())
    assert "SwaggerUIBundle" in page and "https://" not in page.split("<body")[0]
