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


def operations():
    import json

    document = json.loads(DOCUMENT.read_text())
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            yield f"{method.upper()} {path}", operation


def test_every_operation_declares_the_errors_it_answers_with_the_error_body():
    for name, operation in operations():
        for status in ("400", "401", "500"):
            assert status in operation["responses"], f"{name} lacks {status}"
        schema = operation["responses"]["400"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, name


def test_no_operation_declares_the_422_the_service_never_answers():
    for name, operation in operations():
        answer = operation["responses"].get("422")
        if answer is not None:
            # A reused Idempotency-Key; a failed ?check=true of an account change.
            assert name in ("POST /api/core/mail/send/{account}", "PUT /api/core/mail/accounts/{account}")
            assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")


def test_operations_that_create_or_queue_declare_their_real_success_status():
    found = dict(operations())
    assert set(found["POST /api/core/files"]["responses"]) & {"200", "201"} == {"201"}
    assert set(found["POST /api/core/mail"]["responses"]) & {"200", "202"} == {"202"}


def test_sending_declares_the_idempotency_key_header():
    (header,) = [
        parameter
        for parameter in dict(operations())["POST /api/core/mail/send/{account}"]["parameters"]
        if parameter["in"] == "header"
    ]
    assert header["name"].lower() == "idempotency-key" and header["schema"]["anyOf"][0]["maxLength"] == 255


def test_the_request_bodies_say_which_one_of_two_fields_is_required():
    import json

    schemas = json.loads(DOCUMENT.read_text())["components"]["schemas"]
    assert schemas["FileUpload"]["anyOf"] == [{"required": ["content"]}, {"required": ["size"]}]
    assert {"required": ["body_html"]} in schemas["SendRequest"]["allOf"][1]["anyOf"]
    assert schemas["SendRequest"]["examples"] and schemas["QueueRequest"]["examples"]
