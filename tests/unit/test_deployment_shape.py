"""What CloudFormation gets from template.yaml (translated by aws-sam-translator, as `sam deploy`
does): one function per trigger where the needs differ, the API's inside API Gateway's 29 s, and
every trigger invoking the SnapStart alias."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from local.gateway import INTEGRATION_TIMEOUT
from local.template import Template

ROOT = Path(__file__).resolve().parents[2]


@cache
def template() -> Template:
    return Template.load(ROOT / "template.yaml")


def translated_of_type(type_: str) -> dict[str, dict[str, Any]]:
    return template().translated().resources_of_type(type_)


def test_a_function_behind_the_api_has_no_other_trigger_and_stops_within_29_seconds():
    for function_id, spec in template().functions().items():
        kinds = {
            event["Type"]
            for event in (template().function_properties(function_id).get("Events") or {}).values()
        }
        if "Api" in kinds:
            assert kinds == {"Api"}, f"{function_id} serves the API and {kinds - {'Api'}}"
            assert spec.timeout <= INTEGRATION_TIMEOUT, f"{function_id} runs on after API Gateway gave up"


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
