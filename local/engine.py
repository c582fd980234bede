"""The part of the translated template that moto's CloudFormation creates: the engine's stack.

moto 5.2.5's CloudFormation creates these types as CloudFormation does (names with random
suffixes, Ref and Fn::GetAtt values, redrive policies, streams, role policies with the real ARNs);
what it lacks or gets wrong has a small adapter in local/adapters.py, and what the local runtime
runs itself (functions, API, event sources) is read from the translated template. The numbers
behind this split are in docs/local-stack.md.

The engine's template is the translated template's resources of ENGINE_TYPES. A reference from
one of them to a resource outside (a schedule's role invoking a function's alias) enters as a
Parameter with the value the local runtime gives that resource; every value the rest of the stack
needs from the engine leaves as an Output and is recorded on the `Template`.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from typing import Any, Final

from local.template import Template, TemplateError

__all__ = ["ENGINE_TYPES", "create_engine_stack", "engine_template"]

# Type -> the Fn::GetAtt attributes the stack reads back (Ref always).
ENGINE_TYPES: Final[dict[str, tuple[str, ...]]] = {
    "AWS::DynamoDB::Table": ("Arn", "StreamArn"),
    "AWS::S3::Bucket": ("Arn",),
    "AWS::SQS::Queue": ("Arn", "QueueName"),
    # moto answers Ref to a bus with a Python object, not its name: Ref is read as Fn::GetAtt Name.
    "AWS::Events::EventBus": ("Arn", "Name"),
    "AWS::KMS::Key": ("Arn",),
    "AWS::IAM::Role": ("Arn",),
}
_REF_AS_ATTRIBUTE: Final = {"AWS::Events::EventBus": "Name"}
# What `physical` names for each type: the attribute a person finds the resource by.
_NAME_ATTRIBUTE: Final = {"AWS::SQS::Queue": "QueueName", "AWS::Events::EventBus": "Name"}
_SUB_NAME = re.compile(r"\$\{([^}!][^}]*)\}")


def engine_template(template: Template) -> tuple[dict[str, Any], dict[str, str]]:
    """The engine's template and its parameter values, from `template`'s translation."""
    translated = template.translated()
    inside = {
        logical_id: {key: value for key, value in resource.items() if key != "Condition"}
        for logical_id, resource in translated.resources.items()
        if resource.get("Type") in ENGINE_TYPES
    }
    declared = translated.data.get("Parameters") or {}
    parameters: dict[str, Any] = {name: declared[name] for name in declared}
    values = {name: _parameter_value(value) for name, value in translated.parameters.items()}

    def outside(expression: dict[str, Any], name: str) -> dict[str, str]:
        parameters[name] = {"Type": "String"}
        values[name] = str(translated.resolve(expression))
        return {"Ref": name}

    def rewrite(value: Any) -> Any:
        if isinstance(value, list):
            return [rewrite(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"} and _outside(value["Ref"], inside, parameters):
            return outside(value, "Local" + value["Ref"].replace(".", ""))
        if set(value) == {"Fn::GetAtt"}:
            parts = value["Fn::GetAtt"]
            parts = [str(part) for part in parts] if isinstance(parts, list) else str(parts).split(".", 1)
            if _outside(parts[0], inside, parameters):
                return outside({"Fn::GetAtt": parts}, "Local" + "".join(parts))
        if set(value) == {"Fn::Sub"}:
            text, variables = (
                (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]
            )

            def replace(match: re.Match[str]) -> str:
                name = match.group(1).strip()
                if name in variables or not _outside(name.split(".")[0], inside, parameters):
                    return match.group(0)
                reference = {"Fn::GetAtt": name.split(".", 1)} if "." in name else {"Ref": name}
                return "${" + outside(reference, "Local" + name.replace(".", ""))["Ref"] + "}"

            text = _SUB_NAME.sub(replace, text)
            return {"Fn::Sub": [text, rewrite(variables)] if variables else text}
        return {key: rewrite(item) for key, item in value.items()}

    resources = rewrite(inside)
    _name_fifo_queues(resources, template.stack_name)
    body = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Parameters": parameters,
        "Conditions": translated.data.get("Conditions") or {},
        "Resources": resources,
        "Outputs": _outputs(inside),
    }
    return body, values


def _name_fifo_queues(resources: dict[str, Any], stack_name: str) -> None:
    """CloudFormation names a FIFO queue "<stack>-<LogicalId>-<random>.fifo"; moto leaves out .fifo."""
    for logical_id, resource in resources.items():
        properties = resource.get("Properties") or {}
        if resource["Type"] == "AWS::SQS::Queue" and properties.get("FifoQueue") in (True, "true"):
            suffix = "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(12))
            properties.setdefault("QueueName", f"{stack_name}-{logical_id}-{suffix}.fifo")


def _outputs(inside: dict[str, Any]) -> dict[str, Any]:
    """An Output "<LogicalId><Attribute>" for Ref and every attribute the stack reads back."""
    outputs: dict[str, Any] = {}
    for logical_id, resource in inside.items():
        type_ = resource["Type"]
        ref_attribute = _REF_AS_ATTRIBUTE.get(type_)
        ref = {"Fn::GetAtt": [logical_id, ref_attribute]} if ref_attribute else {"Ref": logical_id}
        outputs[f"{logical_id}Ref"] = {"Value": ref}
        for attribute in ENGINE_TYPES[type_]:
            if attribute == "StreamArn" and "StreamSpecification" not in (resource.get("Properties") or {}):
                continue
            outputs[f"{logical_id}{attribute}"] = {"Value": {"Fn::GetAtt": [logical_id, attribute]}}
    return outputs


def _parameter_value(value: Any) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


def _outside(name: str, inside: dict[str, Any], parameters: dict[str, Any]) -> bool:
    """`name` is a resource outside the engine's stack (not one of its resources, parameters or
    pseudo parameters)."""
    return not (name in inside or name in parameters or name.startswith("AWS::"))


def create_engine_stack(template: Template, cloudformation: Any) -> dict[str, str]:
    """Creates the engine's stack (named like the template's stack) in moto's CloudFormation, or
    finds it; records every output on `template` and returns logical id -> physical name."""
    stack_name = template.stack_name
    body, values = engine_template(template)
    try:
        (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except cloudformation.exceptions.ClientError:
        cloudformation.create_stack(
            StackName=stack_name,
            TemplateBody=json.dumps(body),
            Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in values.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        )
        (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise TemplateError(
            f"stack {stack_name}: {stack['StackStatus']} {stack.get('StackStatusReason', '')}"
        )
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    found = {
        parameter["ParameterKey"]: parameter["ParameterValue"] for parameter in stack.get("Parameters", [])
    }
    # moto keeps its state for the life of the process: a stack of that name may be another's.
    if not set(body["Outputs"]) <= set(outputs) or any(found.get(k, v) != v for k, v in values.items()):
        raise TemplateError(f"stack {stack_name} exists in moto with another template or parameters")
    physical: dict[str, str] = {}
    for logical_id, resource in body["Resources"].items():
        type_ = resource["Type"]
        for attribute in ("Ref", *ENGINE_TYPES[type_]):
            if f"{logical_id}{attribute}" in outputs:
                template.set_attribute(logical_id, attribute, outputs[f"{logical_id}{attribute}"])
        if type_ == "AWS::SQS::Queue":  # Fn::GetAtt QueueUrl, which moto lacks, is its Ref
            template.set_attribute(logical_id, "QueueUrl", outputs[f"{logical_id}Ref"])
        physical[logical_id] = outputs[f"{logical_id}{_NAME_ATTRIBUTE.get(type_, 'Ref')}"]
    return physical
