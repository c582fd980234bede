"""What CloudFormation gets from template.yaml (translated by aws-sam-translator, as `sam deploy`
does): one function per trigger where the needs differ, the API's inside API Gateway's 29 s, and
every trigger invoking the SnapStart alias."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from local.aws import create_resources_elsewhere
from local.gateway import INTEGRATION_TIMEOUT
from local.stack import LOCAL_STAND_INS
from local.template import Template

ROOT = Path(__file__).resolve().parents[2]


@cache
def template() -> Template:
    template = Template.load(ROOT / "template.yaml", stack_name="shape")
    create_resources_elsewhere(template)  # event sources name the queues and the stream
    return template


def translated_of_type(type_: str) -> dict[str, dict[str, Any]]:
    return template().translated().resources_of_type(type_)


def test_a_function_behind_the_api_has_no_other_trigger_and_stops_within_29_seconds():
    behind_the_api = {route.function_id for route in template().api_routes()}
    triggered = {
        function_id
        for kind in ("SQS", "DynamoDB", "EventBridgeRule", "Schedule")
        for function_id, _, _ in template().event_sources(kind)
    }
    assert behind_the_api and not behind_the_api & triggered, behind_the_api & triggered
    for function_id in behind_the_api:
        timeout = template().function(function_id).timeout
        assert timeout <= INTEGRATION_TIMEOUT, f"{function_id} runs on after API Gateway gave up"


def test_every_function_publishes_versions_that_start_from_a_snapstart_snapshot():
    functions = translated_of_type("AWS::Lambda::Function")
    assert functions
    for function_id, function in functions.items():
        assert function["Properties"].get("SnapStart") == {"ApplyOn": "PublishedVersions"}, function_id
    aliases = {
        alias["Properties"]["FunctionName"]["Ref"]
        for alias in translated_of_type("AWS::Lambda::Alias").values()
    }
    assert aliases == set(functions)


def test_the_api_event_sources_schedules_rules_and_cognito_invoke_the_alias():
    aliases = set(translated_of_type("AWS::Lambda::Alias"))
    api_body = json.dumps(translated_of_type("AWS::ApiGateway::RestApi")["MailApi"]["Properties"]["Body"])
    targets = set(re.findall(r"functions/\$\{([A-Za-z0-9]+)\}/invocations", api_body))
    targets |= {
        m["Properties"]["FunctionName"]["Ref"]
        for m in translated_of_type("AWS::Lambda::EventSourceMapping").values()
    }
    targets |= {
        s["Properties"]["Target"]["Arn"]["Ref"]
        for s in translated_of_type("AWS::Scheduler::Schedule").values()
    }
    targets |= {
        target["Arn"]["Ref"]
        for rule in translated_of_type("AWS::Events::Rule").values()
        for target in rule["Properties"]["Targets"]
    }
    pool = translated_of_type("AWS::Cognito::UserPool")["UserPool"]["Properties"]
    targets.add(pool["LambdaConfig"]["CustomEmailSender"]["LambdaArn"]["Ref"])
    assert targets and targets <= aliases, targets - aliases


def test_every_resource_type_cloudformation_would_create_has_a_local_stand_in():
    created = {resource["Type"] for resource in template().translated().resources.values()}
    assert created - set(LOCAL_STAND_INS) == set()


def test_the_console_signs_in_with_the_app_client_the_template_hands_over():
    """No Cognito look-up at run time: the stack's own client, or UserPoolClientId with an existing pool."""
    own = template().attribute("UserPoolClient", "ClientId")
    assert own and template().function("ConsoleFunction").environment["CONSOLE_CLIENT_ID"] == own
    existing = Template.load(
        ROOT / "template.yaml",
        stack_name="shape-pool",
        parameter_overrides={
            "UserPoolArn": "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_x",
            "UserPoolClientId": "operators-client",
        },
    )
    create_resources_elsewhere(existing)
    assert existing.function("ConsoleFunction").environment["CONSOLE_CLIENT_ID"] == "operators-client"
