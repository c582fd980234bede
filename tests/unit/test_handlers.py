"""Handlers answer every failure as JSON: no claims, unexpected errors (fakes, no AWS)."""

import importlib.util
import json
from pathlib import Path

import pytest
from mailcore.wiring import store as store_wiring
from mailcore.wiring.store import StoreRoot

from tests.fakes import memory_directory
from tests.support import claims, rest_event

ROOT = Path(__file__).resolve().parents[2]


class LambdaContext:
    function_name = "StoreFunction"
    memory_limit_in_mb = 512
    invoked_function_arn = "arn:aws:lambda:us-east-1:123456789012:function:StoreFunction"
    aws_request_id = "req-1"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def load(function: str):
    spec = importlib.util.spec_from_file_location(
        f"unit_{function}_app", ROOT / "functions" / function / "app.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BrokenStorage:
    """Storage whose every call fails, as when DynamoDB is unreachable."""

    def __getattr__(self, name):
        raise ConnectionError("dynamodb unreachable: secret-looking detail")


@pytest.fixture
def store_app(monkeypatch):
    root = StoreRoot(storage=BrokenStorage(), directory=memory_directory())  # type: ignore[arg-type]
    monkeypatch.setattr(store_wiring, "root", lambda: root)
    return load("store")


def get_mail(app, caller):
    event = rest_event(
        "GET",
        "/api/core/mail/abc",
        resource="/api/core/mail/{mail_id}",
        path_parameters={"mail_id": "abc"},
        caller=caller,
    )
    answer = app.lambda_handler(event, LambdaContext())
    return answer["statusCode"], json.loads(answer["body"])


def test_a_request_without_claims_is_unauthorized(store_app):
    status, answer = get_mail(store_app, None)
    assert status == 401 and answer["error"]["code"] == "not_authenticated"


def test_an_unexpected_failure_answers_500_json_without_its_details(store_app):
    status, answer = get_mail(store_app, claims("sales"))
    assert status == 500 and answer["error"]["code"] == "internal_error"
    assert "request id" in answer["error"]["message"]
    assert "secret-looking detail" not in json.dumps(answer)


def test_work_for_an_http_caller_stops_before_api_gateway_gives_up():
    import time

    from mailcore.api import make_resolver, seconds_left_for_caller

    app = make_resolver()
    seen = {}

    @app.get("/probe")
    def probe() -> dict:
        seen["left"] = seconds_left_for_caller(app)
        return {}

    event = rest_event("GET", "/probe", resource="/probe", caller=claims("sales"))
    event["requestContext"]["requestTimeEpoch"] = int((time.time() - 25) * 1000)
    context = LambdaContext()
    context.get_remaining_time_in_millis = lambda: 280_000  # a 300 s function, freshly started
    app.resolve(event, context)
    assert 3.0 < seen["left"] < 4.5
