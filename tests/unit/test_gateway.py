"""local.gateway: routing, the Cognito authorizer with moto-issued tokens, the REST proxy event,
API Gateway's own answers; local.invoke's command line."""

import base64
import copy
import dataclasses
import http.client
import json
import os
import re
import threading
import time
from pathlib import Path

import boto3
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from moto.utilities.utils import load_resource

from local import invoke
from local.aws import cognito_user, create_resources, id_token, start_moto_server
from local.engine import evaluate
from local.gateway import CognitoVerifier, FunctionRuntime, InitError, LocalGateway, flatten_claims
from local.template import Template

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "template-sample.yaml"
EMAIL = "member@example.test"
PASSWORD = "Member-password-1!"


class Stack:
    """What the module's tests share: moto, the sample template's resources, a gateway."""

    endpoint: str
    session: boto3.Session
    template: Template
    pool_id: str
    client_id: str
    token: str
    gateway: LocalGateway
    verifier: CognitoVerifier


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            patch.setenv(key, value)
        patch.delenv("AWS_PROFILE", raising=False)
        server, endpoint = start_moto_server()
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        s = Stack()
        s.endpoint = endpoint
        s.session = boto3.Session(region_name="us-east-1")
        s.template = Template.load(SAMPLE, stack_name="gw", endpoint_url=endpoint)
        create_resources(s.template, s.session, endpoint)
        s.pool_id = s.template.attribute("UserPool", "UserPoolId")
        s.client_id = s.template.attribute("UserPoolClient", "ClientId")
        cognito_user(
            s.session,
            endpoint,
            s.pool_id,
            s.client_id,
            email=EMAIL,
            password=PASSWORD,
            groups=["admins", "team-a"],
        )
        s.token = id_token(s.session, s.pool_id, s.client_id, email=EMAIL, password=PASSWORD)
        s.verifier = CognitoVerifier(endpoint, s.pool_id, s.client_id, "us-east-1")
        openapi = tmp_path_factory.mktemp("docs") / "openapi.json"
        openapi.write_text('{"openapi": "3.0.1"}')

        def health(handler):
            handler.send_response(200)
            handler.send_header("Content-Length", "2")
            handler.end_headers()
            handler.wfile.write(b"ok")

        s.gateway = LocalGateway(
            s.template,
            port=0,
            authorizer=s.verifier,
            openapi_path=openapi,
            extra_routes={"/health": health},
            log_requests=False,
        )
        s.gateway.start()
        try:
            yield s
        finally:
            s.gateway.stop()
            server.stop()


def call(stack, method, path, *, token=None, headers=None, body=None, gateway=None):
    """(status, headers as a list, body bytes) of one request to the gateway (no proxies)."""
    port = int((gateway or stack.gateway).url.rsplit(":", 1)[1])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    all_headers = dict(headers or {})
    if token is not None:
        all_headers["Authorization"] = token
    connection.request(method, path, body=body, headers=all_headers)
    response = connection.getresponse()
    data = response.read()
    connection.close()
    return response.status, response.getheaders(), data


def echo(stack, path="/api/echo/demo", **kwargs):
    status, headers, data = call(stack, kwargs.pop("method", "POST"), path, **kwargs)
    assert status == 200, data
    return json.loads(data), headers


def moto_signed(claims):
    """A token signed with moto's Cognito key (the private half ships inside moto)."""
    key = RSAKey.import_key(load_resource("cognitoidp/resources/jwks-private.json"))
    return jwt.encode({"alg": "RS256", "kid": "dummy"}, claims, key)


# ---------------------------------------------------------------------------- API Gateway's own answers


def test_unknown_route_is_missing_authentication_token(stack):
    status, headers, data = call(stack, "GET", "/api/nope")
    assert status == 403 and json.loads(data) == {"message": "Missing Authentication Token"}
    assert ("x-amzn-ErrorType", "MissingAuthenticationTokenException") in headers
    # a known path with a method the API does not have is unknown too
    assert call(stack, "DELETE", "/api/echo/demo", token=stack.token)[0] == 403
    for method in ("TRACE", "QUERY"):
        assert call(stack, method, "/api/echo/demo", token=stack.token)[0] == 403


def test_missing_or_bad_token_is_401_without_calling_the_function(stack, monkeypatch):
    invoked = []
    monkeypatch.setattr(
        stack.gateway.runtime("BoomFunction"), "invoke", lambda *args, **kw: invoked.append(args)
    )
    for token in (None, "", "garbage", "Bearer x.y.z", stack.token[:-4] + "AAAA"):
        status, _, data = call(stack, "GET", "/api/boom", token=token)
        assert status == 401 and json.loads(data) == {"message": "Unauthorized"}, token
    assert invoked == []


def test_expired_forged_and_foreign_tokens_are_refused(stack):
    now = int(time.time())
    claims = {
        "iss": stack.verifier.issuer,
        "aud": stack.client_id,
        "token_use": "id",
        "sub": "s",
        "iat": now - 7200,
        "exp": now - 3600,
    }
    status, _, data = call(stack, "POST", "/api/echo/demo", token=moto_signed(claims))
    assert status == 401 and json.loads(data) == {"message": "The incoming token has expired"}
    # well signed and valid: accepted (the test's own token works)
    assert call(stack, "POST", "/api/echo/demo", token=moto_signed({**claims, "exp": now + 60}))[0] == 200
    for wrong in ({"aud": "other-client"}, {"token_use": "access"}, {"iss": "https://elsewhere/x"}):
        assert (
            call(stack, "POST", "/api/echo/demo", token=moto_signed({**claims, "exp": now + 60, **wrong}))[0]
            == 401
        )
    forged = jwt.encode(
        {"alg": "RS256", "kid": "dummy"}, {**claims, "exp": now + 60}, RSAKey.generate_key(2048)
    )
    status, _, data = call(stack, "POST", "/api/echo/demo", token=forged)
    assert status == 401 and json.loads(data) == {"message": "Unauthorized"}


def test_function_errors_are_502(stack):
    for path in ("/api/boom", "/api/malformed"):
        status, headers, data = call(stack, "GET", path, token=stack.token)
        assert status == 502 and json.loads(data) == {"message": "Internal server error"}, path
        assert ("x-amzn-ErrorType", "InternalServerErrorException") in headers


def test_function_timeout_is_502_and_integration_timeout_504(stack):
    status, _, data = call(stack, "GET", "/api/slow")  # Timeout: 1, sleeps 1.6 s
    assert status == 502 and json.loads(data) == {"message": "Internal server error"}
    stack.gateway.integration_timeout = 0.2
    try:
        status, _, data = call(stack, "GET", "/api/slow")
    finally:
        stack.gateway.integration_timeout = 29.0
    assert status == 504 and json.loads(data) == {"message": "Endpoint request timed out"}


# ---------------------------------------------------------------------------- the proxy event


def test_valid_token_reaches_the_handler_with_claims_and_proxy_event(stack):
    body, headers = echo(
        stack,
        "/api/echo/a%40b.test?x=1&x=2&q=hello%20world&empty=",
        token=stack.token,
        headers={"X-Custom-Header": "Value", "Content-Type": "application/json", "User-Agent": "tests/1"},
        body=b'{"hello": "w\xc3\xb6rld"}',
    )
    event = body["event"]
    assert event["resource"] == "/api/echo/{name}"
    assert event["path"] == "/api/echo/a%40b.test"
    assert event["httpMethod"] == "POST"
    assert event["pathParameters"] == {"name": "a@b.test"}
    assert event["queryStringParameters"] == {"x": "2", "q": "hello world", "empty": ""}
    assert event["multiValueQueryStringParameters"] == {"x": ["1", "2"], "q": ["hello world"], "empty": [""]}
    assert event["headers"]["X-Custom-Header"] == "Value"  # the client's case is kept
    assert event["multiValueHeaders"]["X-Custom-Header"] == ["Value"]
    assert event["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert event["stageVariables"] is None
    assert event["body"] == '{"hello": "wörld"}' and event["isBase64Encoded"] is False

    context = event["requestContext"]
    assert context["resourcePath"] == "/api/echo/{name}" and context["httpMethod"] == "POST"
    assert context["path"] == "/v1/api/echo/a%40b.test" and context["stage"] == "v1"
    assert context["accountId"] == "123456789012"
    assert context["apiId"] == stack.template.resolve({"Ref": "MailApi"})
    assert re.fullmatch(r"[0-9a-f-]{36}", context["requestId"])
    assert abs(context["requestTimeEpoch"] / 1000 - time.time()) < 10
    assert context["identity"]["sourceIp"] == "127.0.0.1" and context["identity"]["userAgent"] == "tests/1"
    claims = context["authorizer"]["claims"]
    assert all(isinstance(value, str) for value in claims.values())
    assert set(claims["cognito:groups"].split(",")) == {"admins", "team-a"}
    assert claims["email"] == EMAIL and claims["email_verified"] == "true"
    assert claims["token_use"] == "id" and claims["aud"] == stack.client_id
    assert claims["iss"] == f"https://cognito-idp.us-east-1.amazonaws.com/{stack.pool_id}"
    assert re.fullmatch(
        r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [A-Z][a-z]{2} \d\d \d\d:\d\d:\d\d UTC \d{4}", claims["exp"]
    )
    assert claims["auth_time"].isdigit()

    assert body["context"]["function_name"] == "gw-EchoFunction"
    assert body["context"]["function_version"] == "$LATEST"
    assert body["context"]["memory_limit_in_mb"] == 256
    assert body["context"]["aws_request_id"] == context["requestId"]
    assert 0 < body["context"]["remaining_ms"] <= 5000
    table = stack.template.resolve({"Ref": "MailTable"})  # named by moto's CloudFormation
    assert body["env"] == {"TABLE": table, "ECHO_NAME": "gw-echo", "AWS_LAMBDA_FUNCTION_NAME": None}
    assert body["module"].startswith("_local_lambda_EchoFunction_")

    assert ("X-Echo", "yes") in headers
    assert [value for name, value in headers if name == "Set-Cookie"] == ["a=1", "b=2"]
    assert any(name == "x-amzn-RequestId" for name, _ in headers)


def test_stage_prefix_bearer_and_public_route(stack):
    body, _ = echo(stack, "/v1/api/echo/demo", token="Bearer " + stack.token)
    assert body["event"]["path"] == "/api/echo/demo"
    assert body["event"]["requestContext"]["path"] == "/v1/api/echo/demo"
    assert body["event"]["body"] is None

    body, _ = echo(stack, "/api/public", method="GET")
    event = body["event"]
    assert "authorizer" not in event["requestContext"]
    assert event["queryStringParameters"] is None and event["multiValueQueryStringParameters"] is None
    assert event["pathParameters"] is None


def test_most_specific_route_wins(stack):
    assert echo(stack, "/api/echo/static", token=stack.token)[0]["event"]["resource"] == "/api/echo/static"
    body, _ = echo(stack, "/api/any/a/b%20c", method="DELETE", token=stack.token)
    assert body["event"]["resource"] == "/api/any/{proxy+}"
    assert body["event"]["pathParameters"] == {"proxy": "a/b c"}


def test_binary_bodies(stack):
    raw = b"\x00\xff\x10binary"
    body, _ = echo(stack, token=stack.token, headers={"Content-Type": "application/octet-stream"}, body=raw)
    assert body["event"]["isBase64Encoded"] is True
    assert base64.b64decode(body["event"]["body"]) == raw

    status, headers, data = call(stack, "GET", "/api/binary", headers={"Accept": "application/octet-stream"})
    assert status == 200 and data == b"\x00\xffbin"
    assert ("Content-Type", "application/octet-stream") in headers
    # as on API Gateway: without an Accept naming a binary media type the client gets the base64 text
    status, _, data = call(stack, "GET", "/api/binary")
    assert status == 200 and base64.b64decode(data) == b"\x00\xffbin"


def test_concurrent_requests_get_their_own_execution_environment(stack):
    results = []

    def request():
        results.append(echo(stack, "/api/echo/x?sleep=0.4", token=stack.token)[0]["module"])

    threads = [threading.Thread(target=request) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 2 and len(set(results)) == 2
    assert stack.gateway.runtime("EchoFunction").environments >= 2


def test_a_thread_mode_runtime_gives_each_invocation_its_own_powertools_request(stack):
    from aws_lambda_powertools.event_handler.api_gateway import APIGatewayRestResolver, BaseRouter

    FunctionRuntime(stack.template.function("EchoFunction"), isolation="thread")
    # Two resolvers (two functions) answering at once; resolve() sets the request on BaseRouter.
    resolvers = [APIGatewayRestResolver(), APIGatewayRestResolver()]
    both_set = threading.Barrier(2)
    seen: dict[int, object] = {}

    def answer(number: int) -> None:
        BaseRouter.current_event = f"request {number}"  # type: ignore[assignment]
        both_set.wait(5)
        seen[number] = resolvers[number].current_event

    threads = [threading.Thread(target=answer, args=(number,)) for number in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {0: "request 0", 1: "request 1"}


def test_a_function_whose_template_lacks_a_variable_its_init_reads_fails_a_thread_mode_start(monkeypatch):
    from mailcore import wiring

    from tests.stack import _resolved_template

    template = _resolved_template()
    functions = template.functions()
    pull = functions["PullFunction"]  # QueuedPullFunction and PullDispatchFunction have it too
    lacking = {key: value for key, value in pull.environment.items() if key != "PULL_QUEUE_URL"}
    monkeypatch.setattr(
        template,
        "functions",
        lambda: {**functions, "PullFunction": dataclasses.replace(pull, environment=lacking)},
    )
    gateway = LocalGateway(
        template,
        port=0,
        authorizer=CognitoVerifier("http://127.0.0.1:9", "pool", "client", "us-east-1"),
        log_requests=False,
        forget_process_state=wiring.reset,
    )
    try:
        with pytest.raises(InitError, match=r"PullFunction: its init failed: .*PULL_QUEUE_URL"):
            gateway.start()
    finally:
        gateway.stop()


def test_direct_invoke(stack):
    result = stack.gateway.invoke("EchoFunction", {"source": "schedule"})
    assert json.loads(result["body"])["event"] == {"source": "schedule"}
    with pytest.raises(RuntimeError, match="boom"):
        stack.gateway.invoke("BoomFunction", {})


def test_docs_and_extra_routes(stack):
    status, _, data = call(stack, "GET", "/openapi.json")
    assert status == 200 and json.loads(data) == {"openapi": "3.0.1"}
    status, _, data = call(stack, "GET", "/swagger")
    # The page embeds the document and the UI assets Powertools ships: no network needed.
    assert status == 200 and b"SwaggerUIBundle" in data and b"3.0.1" in data
    assert call(stack, "GET", "/health")[2] == b"ok"


def test_gateway_responses_of_the_template(stack):
    data = copy.deepcopy(stack.template.data)
    data["Resources"]["MailApi"]["Properties"]["GatewayResponses"] = {
        "DEFAULT_4XX": {
            "ResponseParameters": {"Headers": {"Access-Control-Allow-Origin": "'*'"}},
            "ResponseTemplates": {
                "application/json": (
                    '{"error":{"code":"$context.error.responseType","message":$context.error.messageString}}'
                )
            },
        }
    }
    template = Template(data, path=SAMPLE, stack_name="gw", endpoint_url=stack.endpoint)
    for key, value in stack.template._attributes.items():
        template.set_attribute(*key, value)
    cloudformation = stack.session.client("cloudformation", endpoint_url=stack.endpoint)
    template.evaluate_with(lambda expressions: evaluate(template, cloudformation, expressions))
    gateway = LocalGateway(template, port=0, authorizer=stack.verifier, log_requests=False)
    gateway.start()
    try:
        status, headers, body = call(stack, "GET", "/nope", gateway=gateway)
        assert status == 403
        assert json.loads(body) == {
            "error": {"code": "MISSING_AUTHENTICATION_TOKEN", "message": "Missing Authentication Token"}
        }
        assert ("Access-Control-Allow-Origin", "*") in headers
        status, _, body = call(stack, "GET", "/api/boom", gateway=gateway)
        assert status == 401 and json.loads(body)["error"]["code"] == "UNAUTHORIZED"
    finally:
        gateway.stop()


def test_only_loopback_and_authorizer_required(stack):
    with pytest.raises(ValueError, match="loopback"):
        LocalGateway(stack.template, host="0.0.0.0", authorizer=stack.verifier)
    with pytest.raises(ValueError, match="need a Cognito authorizer"):
        LocalGateway(stack.template, authorizer=None)


def test_flatten_claims():
    assert flatten_claims(
        {"cognito:groups": ["a", "b"], "exp": 1544116103, "auth_time": 1544112503, "ok": True, "n": 1.0}
    ) == {
        "cognito:groups": "a,b",
        "exp": "Thu Dec 06 17:08:23 UTC 2018",
        "auth_time": "1544112503",
        "ok": "true",
        "n": "1",
    }
    assert flatten_claims({"cognito:groups": ["solo"]}) == {"cognito:groups": "solo"}


# ---------------------------------------------------------------------------- python -m local.invoke


def test_invoke_command(stack, tmp_path, capsys):
    stack_json = tmp_path / "stack.json"
    stack_json.write_text(
        json.dumps(
            {"aws_endpoint": stack.endpoint, "region": "us-east-1", "environment": {"TABLE": "from-stack"}}
        )
    )
    event = tmp_path / "event.json"
    event.write_text('{"source": "cli"}')
    arguments = ["--template", str(SAMPLE), "--stack-json", str(stack_json)]
    saved = dict(os.environ)  # the command sets the stack's environment in this process
    try:
        assert invoke.main(["EchoFunction", str(event), *arguments]) == 0
        result = json.loads(capsys.readouterr().out)
        body = json.loads(result["body"])
        assert body["event"] == {"source": "cli"} and body["env"]["TABLE"] == "from-stack"

        assert invoke.main(["BoomFunction", str(event), *arguments]) == 1
        report = json.loads(capsys.readouterr().out)
        assert report["errorType"] == "RuntimeError" and report["errorMessage"] == "boom"
        assert invoke.main(["NoSuchFunction", str(event), *arguments]) == 2
    finally:
        os.environ.clear()
        os.environ.update(saved)
