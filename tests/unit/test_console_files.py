"""The console's files: served with a strict policy, nothing outside its folder."""

import json

import pytest

from tests.support import handler, load_function, rest_event


@pytest.fixture(scope="module")
def console():
    return load_function("console")


def get(console, file: str | None) -> dict:
    path = "/console" + (f"/{file}" if file else "")
    event = rest_event(
        "GET",
        path,
        resource="/console/{file}" if file else "/console",
        path_parameters={"file": file} if file else None,
    )
    return handler(console)(event)


def test_the_console_page_is_served_with_a_policy_that_allows_only_its_own_scripts(console):
    answer = get(console, None)
    assert answer["statusCode"] == 200 and "<title>Mail console</title>" in answer["body"]
    policy = answer["multiValueHeaders"]["Content-Security-Policy"][0]
    assert "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-eval" not in policy and "script-src 'self' 'unsafe-inline'" not in policy


def test_a_module_is_served_as_javascript(console):
    answer = get(console, "app.js")
    assert answer["multiValueHeaders"]["Content-Type"][0].startswith("text/javascript")


@pytest.mark.parametrize("file", ["..%2Fapp.py", "../app.py", "%2e%2e%2fapp.py", "nothing.js", "..", "."])
def test_nothing_outside_the_console_folder_is_served(console, file):
    answer = get(console, file)
    assert answer["statusCode"] == 404 and "lambda_handler" not in answer["body"]


def test_the_sign_in_config_names_the_app_client_the_template_hands_over(console, monkeypatch):
    monkeypatch.setenv("CONSOLE_CLIENT_ID", "stack-client")
    answer = get(console, "config.json")
    assert answer["statusCode"] == 200 and json.loads(answer["body"])["client_id"] == "stack-client"
