"""local.template (intrinsics, names, functions, routes) and local.aws.create_resources against moto."""

import json
import re
from pathlib import Path

import boto3
import pytest

from local.aws import create_resources, start_moto_server
from local.engine import evaluate
from local.gateway import merged_environment
from local.template import NO_VALUE, ApiRoute, FunctionSpec, Template, TemplateError, match_path

DATA = Path(__file__).parent / "data"
SAMPLE = DATA / "template-sample.yaml"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def template() -> Template:
    return Template.load(SAMPLE, stack_name="demo", endpoint_url="http://127.0.0.1:4566")


@pytest.fixture(scope="module")
def moto():
    server, endpoint = start_moto_server()
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    yield session, endpoint
    server.stop()


@pytest.fixture(scope="module")
def created(moto) -> tuple[Template, dict[str, str]]:
    """The sample's stack "demo" created in moto: the template, and logical id -> physical name."""
    session, endpoint = moto
    template = Template.load(SAMPLE, stack_name="demo", endpoint_url=endpoint)
    return template, create_resources(template, session, endpoint)


# ---------------------------------------------------------------------------- parameters, conditions


def test_parameters_defaults_and_overrides(template):
    assert template.parameters == {
        "Prefix": "sample",
        "UserPoolArn": "",
        "RetentionDays": "14",
        "Stage": "dev",
    }
    other = Template.load(SAMPLE, parameter_overrides={"Stage": "prod", "RetentionDays": "3"})
    assert other.resolve({"Ref": "RetentionDays"}) == "3"
    with pytest.raises(TemplateError, match="not declared"):
        Template.load(SAMPLE, parameter_overrides={"Nope": "x"})
    with pytest.raises(TemplateError, match="not one of"):
        Template.load(SAMPLE, parameter_overrides={"Stage": "test"})


def test_conditions_decide_which_resources_exist(template, moto):
    assert template.condition("CreateUserPool") is True
    assert template.condition("NotProd") is True
    assert template.condition("ProdWithPool") is False
    assert "UserPool" in template.resources and "ProvisionedTable" in template.resources
    assert "ProdOnlyTable" not in template.resources

    external = Template.load(
        SAMPLE,
        parameter_overrides={"Stage": "prod", "UserPoolArn": "arn:aws:cognito-idp:us-east-1:1:userpool/x"},
    )
    assert external.condition("CreateUserPool") is False
    assert "UserPool" not in external.resources and "UserPoolClient" not in external.resources
    assert "ProdOnlyTable" in external.resources and "ProvisionedTable" not in external.resources
    # !If picks the parameter when the pool is not created; !Ref of the missing pool is an error
    session, endpoint = moto
    cloudformation = session.client("cloudformation", endpoint_url=endpoint)
    external.evaluate_with(lambda expressions: evaluate(external, cloudformation, expressions))
    auth = external.resolve(external.resources["MailApi"]["Properties"]["Auth"])
    assert auth["Authorizers"]["CognitoAuthorizer"]["UserPoolArn"].endswith("userpool/x")
    with pytest.raises(TemplateError, match="condition is false"):
        external.resolve({"Ref": "UserPool"})


# ---------------------------------------------------------------------------- intrinsics


def test_ref_and_pseudo_parameters(template):
    assert template.resolve({"Ref": "Prefix"}) == "sample"
    assert template.resolve({"Ref": "AWS::Region"}) == "us-east-1"
    assert template.resolve({"Ref": "AWS::AccountId"}) == "123456789012"
    assert template.resolve({"Ref": "AWS::StackName"}) == "demo"
    assert template.resolve({"Ref": "AWS::Partition"}) == "aws"
    assert template.resolve({"Ref": "AWS::URLSuffix"}) == "amazonaws.com"
    with pytest.raises(TemplateError, match="unknown"):
        template.resolve({"Ref": "Missing"})


def test_values_of_resources_created_in_moto_are_unknown_before_they_exist(template):
    for reference in (
        {"Ref": "MailTable"},
        {"Ref": "WorkQueue"},
        {"Fn::GetAtt": ["MailTable", "StreamArn"]},
        {"Fn::GetAtt": ["UserPool", "Arn"]},
        {"Fn::Sub": "${MailBucket.Arn}/*"},
    ):
        with pytest.raises(TemplateError, match="create_resources"):
            template.resolve(reference)
    template.set_attribute("MailTable", "StreamArn", "arn:stream")
    assert template.resolve({"Fn::GetAtt": "MailTable.StreamArn"}) == "arn:stream"


def test_ref_and_get_att_answer_what_moto_created(created, moto):
    template, physical = created
    session, endpoint = moto
    assert template.resolve({"Ref": "MailTable"}) == physical["MailTable"]
    table = session.client("dynamodb", endpoint_url=endpoint).describe_table(TableName=physical["MailTable"])
    assert template.resolve({"Fn::GetAtt": ["MailTable", "Arn"]}) == table["Table"]["TableArn"]
    assert template.resolve({"Fn::GetAtt": "MailTable.StreamArn"}) == table["Table"]["LatestStreamArn"]
    queue_url = template.resolve({"Ref": "WorkQueue"})  # the URL as AWS answers it, not the endpoint's
    assert queue_url == f"https://sqs.us-east-1.amazonaws.com/123456789012/{physical['WorkQueue']}"
    queue = session.client("sqs", endpoint_url=endpoint).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["QueueArn"]
    )
    assert template.resolve({"Fn::GetAtt": "WorkQueue.Arn"}) == queue["Attributes"]["QueueArn"]
    assert template.resolve({"Ref": "MailEventBus"}) == "demo-mail"  # moto's own Ref is an object
    bus = session.client("events", endpoint_url=endpoint).describe_event_bus(Name="demo-mail")
    assert template.resolve({"Fn::GetAtt": ["MailEventBus", "Arn"]}) == bus["Arn"]
    assert template.resolve({"Fn::Sub": "${MailBucket.Arn}/*"}) == f"arn:aws:s3:::{physical['MailBucket']}/*"
    pool_id = physical["UserPool"]
    assert template.resolve({"Fn::GetAtt": ["UserPool", "Arn"]}) == (
        f"arn:aws:cognito-idp:us-east-1:123456789012:userpool/{pool_id}"
    )


def test_sub_string_list_and_escape(created):
    template, _ = created
    assert template.resolve({"Fn::Sub": "${AWS::StackName}-x-${Prefix}"}) == "demo-x-sample"
    assert template.resolve({"Fn::Sub": ["${A}/${B}-${Prefix}", {"A": "one", "B": {"Ref": "Stage"}}]}) == (
        "one/dev-sample"
    )
    assert template.resolve({"Fn::Sub": "${!Literal} ${AWS::Region}"}) == "${Literal} us-east-1"


def test_if_equals_join_select_split_findinmap_novalue(created):
    template, _ = created
    assert template.resolve({"Fn::If": ["IsProd", "a", "b"]}) == "b"
    assert template.resolve({"Fn::Equals": [{"Ref": "RetentionDays"}, 14]}) is True
    assert template.resolve({"Fn::Not": [{"Fn::Equals": ["a", "a"]}]}) is False
    assert template.resolve({"Fn::Or": [{"Condition": "IsProd"}, {"Condition": "NotProd"}]}) is True
    assert template.resolve({"Fn::Join": [":", ["a", {"Ref": "Prefix"}, 3]]}) == "a:sample:3"
    assert template.resolve({"Fn::Select": ["2", {"Fn::Split": ["/", "x/y/z"]}]}) == "z"
    assert template.resolve({"Fn::FindInMap": ["StageSettings", {"Ref": "Stage"}, "LogLevel"]}) == "DEBUG"
    resolved = template.resolve(
        {"Keep": 1, "Drop": {"Ref": "AWS::NoValue"}, "List": [1, {"Ref": "AWS::NoValue"}]}
    )
    assert resolved == {"Keep": 1, "List": [1]}
    assert template.resolve({"Ref": "AWS::NoValue"}) is None
    # moto answers AWS::NoValue with null and keeps it in a list; CloudFormation drops it
    assert template.resolve({"List": [1, {"Fn::If": ["IsProd", 2, {"Ref": "AWS::NoValue"}]}]}) == {
        "List": [1]
    }
    assert template.resolve({"Fn::If": ["NotProd", [1, {"Ref": "AWS::NoValue"}], []]}) == [1]
    assert template._resolve({"Ref": "AWS::NoValue"}) is NO_VALUE
    outputs = template.data["Outputs"]
    assert template.resolve(outputs["Letters"]["Value"]) == "a-b-c"
    assert template.resolve(outputs["Second"]["Value"]) == "b"


def test_functions_other_than_references_and_conditions_are_evaluated_by_moto_cloudformation(created, moto):
    template, _ = created
    session, endpoint = moto
    value = {"Fn::Join": ["/", [{"Ref": "AWS::StackName"}, {"Fn::GetAtt": ["MailTable", "Arn"]}, "unasked"]]}
    cloudformation = session.client("cloudformation", endpoint_url=endpoint)
    before = {stack["StackName"] for stack in cloudformation.describe_stacks()["Stacks"]}
    assert template.resolve(value) == f"demo/{template.resolve({'Fn::GetAtt': ['MailTable', 'Arn']})}/unasked"
    (evaluating,) = {stack["StackName"] for stack in cloudformation.describe_stacks()["Stacks"]} - before
    assert evaluating.startswith("demo-values-")


def test_short_form_tags_and_dates_parse_as_in_cloudformation(template):
    raw = template.resources["EchoFunction"]["Properties"]["Environment"]["Variables"]
    assert raw["TABLE_ARN"] == {"Fn::GetAtt": ["MailTable", "Arn"]}
    assert raw["ECHO_NAME"] == {"Fn::Sub": "${AWS::StackName}-echo"}
    assert template.data["Globals"]["Function"]["Environment"]["Variables"]["RELEASED"] == "2026-11-24"


# ---------------------------------------------------------------------------- names


def test_moto_cloudformation_names_what_has_no_name_and_keeps_explicit_names(created):
    _, physical = created
    assert re.fullmatch(r"demo-MailTable-[A-Z0-9]{12}", physical["MailTable"])
    assert physical["ProvisionedTable"] == "sample-demo-provisioned"  # explicit TableName
    assert re.fullmatch(r"demo-mailbucket-[a-z0-9]{12}", physical["MailBucket"])  # S3 names are lower case
    assert physical["NamedBucket"] == "sample-demo-files-123456789012"
    assert physical["MailEventBus"] == "demo-mail"
    assert re.fullmatch(r"demo-OrderedQueue-[A-Z0-9]{12}\.fifo", physical["OrderedQueue"])
    assert re.fullmatch(r"demo-EchoFunctionRole-[A-Z0-9]{12}", physical["EchoFunctionRole"])
    assert "ProdOnlyTable" not in physical


# ---------------------------------------------------------------------------- functions


def test_functions_are_read_from_the_translated_template_with_globals_merged(created):
    template, physical = created
    functions = template.functions()
    assert set(functions) == {"EchoFunction", "BoomFunction", "SlowFunction", "BinaryFunction"}
    echo = functions["EchoFunction"]
    assert echo.code_dir == DATA / "fn_echo"
    assert (echo.module, echo.attribute, echo.handler) == ("app", "lambda_handler", "app.lambda_handler")
    assert (echo.timeout, echo.memory, echo.runtime) == (5, 256, "python3.13")
    assert echo.function_name == "demo-EchoFunction"
    assert echo.layer_dirs == (DATA / "layer",)
    assert echo.environment == {
        "TABLE": physical["MailTable"],
        "BUCKET": physical["MailBucket"],
        "BUS": "demo-mail",
        "QUEUE_URL": template.resolve({"Ref": "WorkQueue"}),
        "LOG_LEVEL": "DEBUG",
        "RETENTION": "14",
        "FLAG": "true",
        "RELEASED": "2026-11-24",
        "ECHO_NAME": "demo-echo",
        "TABLE_ARN": f"arn:aws:dynamodb:us-east-1:123456789012:table/{physical['MailTable']}",
    }
    boom = functions["BoomFunction"]
    assert (boom.attribute, boom.timeout) == ("boom", 10)
    assert "ECHO_NAME" not in boom.environment and boom.environment["TABLE"] == physical["MailTable"]
    assert template.function("EchoFunction", resolve_environment=False).environment == {}


def test_merged_environment_refuses_disagreeing_functions(created):
    template, physical = created
    merged = merged_environment(template.functions().values())
    assert merged["ECHO_NAME"] == "demo-echo" and merged["TABLE"] == physical["MailTable"]

    def spec(name: str, environment: dict[str, str]) -> FunctionSpec:
        return FunctionSpec(name, DATA, "app", "lambda_handler", 3, 128, environment)

    assert merged_environment([spec("A", {"X": "1"}), spec("B", {"X": "1", "Y": "2"})]) == {
        "X": "1",
        "Y": "2",
    }
    with pytest.raises(ValueError, match="A and B set X differently"):
        merged_environment([spec("A", {"X": "1"}), spec("B", {"X": "2"})])


# ---------------------------------------------------------------------------- routes and events


def test_api_routes(template):
    routes = {(r.method, r.path): r for r in template.api_routes()}
    assert set(routes) == {
        ("POST", "/api/echo/{name}"),
        ("POST", "/api/echo/static"),
        ("ANY", "/api/any/{proxy+}"),
        ("GET", "/api/public"),
        ("GET", "/api/boom"),
        ("GET", "/api/malformed"),
        ("GET", "/api/slow"),
        ("GET", "/api/binary"),
    }
    echo = routes[("POST", "/api/echo/{name}")]
    assert echo.function_id == "EchoFunction" and echo.authorized and echo.authorizer == "CognitoAuthorizer"
    assert echo.api_id == "MailApi" and echo.identity_header == "Authorization"
    assert not routes[("GET", "/api/public")].authorized
    assert routes[("GET", "/api/boom")].function_id == "BoomFunction"


def test_route_matching():
    route = ApiRoute("F", "POST", "/api/core/mail/send/{account}", True)
    assert route.match("post", "/api/core/mail/send/demo") == {"account": "demo"}
    assert route.match("POST", "/api/core/mail/send/a%40b.test") == {"account": "a@b.test"}
    assert route.match("POST", "/api/core/mail/send/demo/") == {"account": "demo"}
    assert route.match("GET", "/api/core/mail/send/demo") is None
    assert route.match("POST", "/api/core/mail/send") is None
    assert route.match("POST", "/api/core/mail/send/demo/x") is None
    assert route.match("POST", "/api/core/mail/send//") is None
    greedy = ApiRoute("F", "ANY", "/files/{proxy+}", False)
    assert greedy.match("DELETE", "/files/a/b%20c.txt") == {"proxy": "a/b c.txt"}
    assert greedy.match("GET", "/files") is None
    assert ApiRoute("F", "GET", "/health", False).match("GET", "/health") == {}
    assert match_path("/", "/") == {}
    ordered = sorted(
        [
            ApiRoute("F", "ANY", "/a/{x}", False),
            ApiRoute("F", "ANY", "/a/{proxy+}", False),
            ApiRoute("F", "GET", "/a/b", False),
            ApiRoute("F", "GET", "/a/{x}", False),
        ],
        key=ApiRoute.specificity,
    )
    assert [(r.method, r.path) for r in ordered] == [
        ("GET", "/a/b"),
        ("GET", "/a/{x}"),
        ("ANY", "/a/{x}"),
        ("ANY", "/a/{proxy+}"),
    ]


def test_event_sources_come_from_the_translated_template(created):
    template, physical = created
    ((function_id, name, sqs),) = template.event_sources("SQS")
    assert (function_id, name) == ("EchoFunction", "EchoFunctionWork")  # the mapping's logical id
    assert sqs["EventSourceArn"] == f"arn:aws:sqs:us-east-1:123456789012:{physical['WorkQueue']}"
    assert sqs["BatchSize"] == 5 and sqs["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    ((_, _, stream),) = template.event_sources("DynamoDB")
    assert stream["EventSourceArn"] == template.resolve({"Fn::GetAtt": "MailTable.StreamArn"})
    ((function_id, name, schedule),) = template.event_sources("Schedule")
    assert (function_id, name, json.loads(schedule["Input"])) == (
        "EchoFunction",
        "EchoFunctionTick",
        {"source": "schedule"},
    )
    assert template.event_sources("EventBridgeRule") == []


def test_not_a_template(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("Foo: 1\n")
    with pytest.raises(TemplateError, match="no Resources"):
        Template.load(path)


# ---------------------------------------------------------------------------- create_resources


def test_create_resources_in_moto(created, moto):
    template, physical = created
    session, endpoint = moto
    dynamodb = session.client("dynamodb", endpoint_url=endpoint)
    table = dynamodb.describe_table(TableName=physical["MailTable"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "id", "KeyType": "HASH"}]
    assert table["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    indexes = {index["IndexName"]: index for index in table["GlobalSecondaryIndexes"]}
    assert indexes["ByTeam"]["KeySchema"] == [
        {"AttributeName": "team", "KeyType": "HASH"},
        {"AttributeName": "created_key", "KeyType": "RANGE"},
    ]
    assert indexes["ByCreated"]["Projection"] == {"ProjectionType": "KEYS_ONLY"}
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    ttl = dynamodb.describe_time_to_live(TableName=physical["MailTable"])["TimeToLiveDescription"]
    assert ttl == {"TimeToLiveStatus": "ENABLED", "AttributeName": "expires_at"}  # by its adapter
    provisioned = dynamodb.describe_table(TableName="sample-demo-provisioned")["Table"]
    assert provisioned["ProvisionedThroughput"]["ReadCapacityUnits"] == 2
    assert provisioned["GlobalSecondaryIndexes"][0]["IndexName"] == "BySk"

    s3 = session.client("s3", endpoint_url=endpoint)
    assert s3.get_bucket_versioning(Bucket=physical["MailBucket"])["Status"] == "Enabled"  # by its adapter
    s3.head_bucket(Bucket="sample-demo-files-123456789012")

    sqs = session.client("sqs", endpoint_url=endpoint)
    work_url = template.resolve({"Ref": "WorkQueue"})
    attributes = sqs.get_queue_attributes(QueueUrl=work_url, AttributeNames=["All"])["Attributes"]
    assert attributes["VisibilityTimeout"] == "60"
    assert json.loads(attributes["RedrivePolicy"]) == {
        "deadLetterTargetArn": template.resolve({"Fn::GetAtt": "DeadLetterQueue.Arn"}),
        "maxReceiveCount": 3,
    }
    fifo = sqs.get_queue_attributes(
        QueueUrl=template.resolve({"Ref": "OrderedQueue"}), AttributeNames=["All"]
    )
    assert fifo["Attributes"]["FifoQueue"] == "true"

    pool_id = template.attribute("UserPool", "UserPoolId")
    client_id = template.attribute("UserPoolClient", "ClientId")
    assert physical["UserPool"] == pool_id and physical["UserPoolClient"] == client_id
    cognito = session.client("cognito-idp", endpoint_url=endpoint)
    client = cognito.describe_user_pool_client(UserPoolId=pool_id, ClientId=client_id)["UserPoolClient"]
    assert client["ClientName"] == "demo-api"
    assert "ALLOW_ADMIN_USER_PASSWORD_AUTH" in client["ExplicitAuthFlows"]
    assert template.outputs()["UserPoolId"] == pool_id
    functions = template.functions()  # every reference resolves now
    assert functions["EchoFunction"].environment["QUEUE_URL"] == work_url

    again = Template.load(SAMPLE, stack_name="demo", endpoint_url=endpoint)
    assert create_resources(again, session, endpoint) == physical  # idempotent: found, not duplicated
    assert again.resolve({"Fn::GetAtt": ["MailTable", "StreamArn"]}) == table["LatestStreamArn"]


@pytest.mark.skipif(not (ROOT / "template.yaml").exists(), reason="template.yaml not written yet")
def test_project_template_runs_locally(moto):
    session, endpoint = moto
    template = Template.load(ROOT / "template.yaml", stack_name="project", endpoint_url=endpoint)
    assert template.api_routes()
    create_resources(template, session, endpoint)
    functions = template.functions()
    assert functions
    merged_environment(functions.values())  # the functions can share one process
    for spec in functions.values():
        assert spec.code_dir.is_relative_to(ROOT)


def test_every_type_created_in_moto_is_unknown_to_the_evaluator_and_named_in_the_stand_ins():
    from local.adapters import ADAPTERS
    from local.engine import ENGINE_TYPES
    from local.stack import ADAPTER, ENGINE, LOCAL_STAND_INS
    from local.template import _CREATED_IN_MOTO

    cognito = {type_ for type_ in ADAPTERS if type_.startswith("AWS::Cognito::")}
    assert set(_CREATED_IN_MOTO) == set(ENGINE_TYPES) | cognito
    assert all(LOCAL_STAND_INS[type_].startswith(ENGINE) for type_ in ENGINE_TYPES)
    assert all(LOCAL_STAND_INS[type_].startswith(ADAPTER) for type_ in set(ADAPTERS) - set(ENGINE_TYPES))


def test_a_reference_from_the_engines_stack_to_a_function_enters_as_a_parameter():
    from local.engine import ENGINE_TYPES, engine_template

    body, values = engine_template(Template.load(ROOT / "template.yaml"))
    assert {resource["Type"] for resource in body["Resources"].values()} == set(ENGINE_TYPES)
    policy = json.dumps(body["Resources"]["PullDispatchFunctionScheduledPullRole"]["Properties"]["Policies"])
    assert '{"Ref": "LocalPullDispatchFunctionAliaslive"}' in policy
    assert values["LocalPullDispatchFunctionAliaslive"] == (
        "arn:aws:lambda:us-east-1:123456789012:function:mail-service-PullDispatchFunction:live"
    )
    assert values["TeamSecretPrefix"] == "mail-service/teams/"  # the template's own parameters
