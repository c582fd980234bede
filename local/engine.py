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

import hashlib
import json
import re
import secrets
import string
from typing import Any, Final

from local.template import NO_VALUE, Template, TemplateError, expression_key

__all__ = ["ENGINE_TYPES", "create_engine_stack", "engine_template", "evaluate"]

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
# Pseudo parameters that name the stack: a stack that evaluates values has a name of its own.
_STACK_PSEUDO_PARAMETERS: Final = ("AWS::StackName", "AWS::StackId")


def engine_template(template: Template) -> tuple[dict[str, Any], dict[str, str]]:
    """The engine's template and its parameter values, from `template`'s translation."""
    translated = template.translated()
    inside = {
        logical_id: {key: value for key, value in resource.items() if key != "Condition"}
        for logical_id, resource in translated.resources.items()
        if resource.get("Type") in ENGINE_TYPES
    }
    references = _References(translated, inside)
    resources = references.rewrite(inside)
    _name_fifo_queues(resources, template.stack_name)
    return references.body(resources, _outputs(inside)), references.values


class _References:
    """Rewrites a reference to anything outside a stack (a resource the stack does not create,
    the stack's own name) to a Parameter "Local<Name>" carrying the value the local stack gives it."""

    def __init__(self, translated: Template, inside: dict[str, Any]) -> None:
        self.translated = translated
        self.inside = inside
        declared = translated.data.get("Parameters") or {}
        self.parameters: dict[str, Any] = {name: declared[name] for name in declared}
        self.values = {name: _parameter_value(value) for name, value in translated.parameters.items()}

    def body(self, resources: dict[str, Any], outputs: dict[str, Any]) -> dict[str, Any]:
        return {
            "AWSTemplateFormatVersion": "2010-09-09",
            "Parameters": self.parameters,
            "Mappings": self.translated.data.get("Mappings") or {},
            "Conditions": self.translated.data.get("Conditions") or {},
            "Resources": resources,
            "Outputs": outputs,
        }

    def _outside(self, name: str) -> bool:
        if name in _STACK_PSEUDO_PARAMETERS:  # another stack's name, when values are evaluated
            return True
        return not (name in self.inside or name in self.parameters or name.startswith("AWS::"))

    def _parameter(self, expression: dict[str, Any], name: str) -> dict[str, str]:
        name = "Local" + re.sub("[^A-Za-z0-9]", "", name)
        self.parameters[name] = {"Type": "String"}
        try:
            self.values[name] = str(self.translated.resolve(expression))
        except TemplateError:
            (reference,) = expression.values()
            logical_id = reference if isinstance(reference, str) else reference[0]
            if logical_id in self.translated.resources or logical_id not in self.translated.all_resources:
                raise
            self.values[name] = ""  # a resource whose condition is false: only in an Fn::If not taken
        return {"Ref": name}

    def rewrite(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.rewrite(item) for item in value]
        if not isinstance(value, dict):
            return value
        if set(value) == {"Ref"} and self._outside(value["Ref"]):
            return self._parameter(value, value["Ref"])
        if set(value) == {"Fn::GetAtt"}:
            parts = value["Fn::GetAtt"]
            parts = [str(part) for part in parts] if isinstance(parts, list) else str(parts).split(".", 1)
            if self._outside(parts[0]):
                return self._parameter({"Fn::GetAtt": parts}, "".join(parts))
        if set(value) == {"Fn::Sub"}:
            text, variables = (
                (value["Fn::Sub"], {}) if isinstance(value["Fn::Sub"], str) else value["Fn::Sub"]
            )

            def replace(match: re.Match[str]) -> str:
                name = match.group(1).strip()
                if name in variables or not self._outside(name.split(".")[0]):
                    return match.group(0)
                reference = {"Fn::GetAtt": name.split(".", 1)} if "." in name else {"Ref": name}
                return "${" + self._parameter(reference, name)["Ref"] + "}"

            text = _SUB_NAME.sub(replace, text)
            return {"Fn::Sub": [text, self.rewrite(variables)] if variables else text}
        return {key: self.rewrite(item) for key, item in value.items()}


def evaluate(template: Template, cloudformation: Any, expressions: list[Any]) -> dict[str, Any]:
    """moto's CloudFormation evaluates `expressions` (template values with intrinsics) as the
    Outputs of a stack without resources, named after what it evaluates (moto keeps it: the
    same question is answered again without a new stack). Returns `expression_key(e)` -> value;
    an expression naming a value not known yet is left out when there are several (the caller
    asks again alone, and hears why)."""
    references = _References(template.translated(), {})
    outputs: dict[str, Any] = {}
    for expression in expressions:
        try:
            rewritten = references.rewrite(expression)
        except TemplateError:
            if len(expressions) == 1:
                raise
            continue
        outputs[f"V{len(outputs)}"] = {"Value": {"Fn::ToJsonString": rewritten}, "Key": expression}
    keys = {name: expression_key(output.pop("Key")) for name, output in outputs.items()}
    body = references.body({}, outputs)
    text = json.dumps(body, sort_keys=True)
    digest = hashlib.sha256((text + json.dumps(references.values, sort_keys=True)).encode()).hexdigest()
    stack = _stack(cloudformation, f"{template.stack_name}-values-{digest[:16]}", text, references.values)
    found = {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}
    return {keys[name]: _without_nulls(json.loads(value)) for name, value in found.items()}


def _without_nulls(value: Any) -> Any:
    """moto evaluates AWS::NoValue to null and keeps it in lists; CloudFormation drops the item."""
    if isinstance(value, list):
        return [_without_nulls(item) for item in value if item is not None]
    if isinstance(value, dict):
        return {key: _without_nulls(item) for key, item in value.items() if item is not None}
    return NO_VALUE if value is None else value


def _stack(cloudformation: Any, stack_name: str, body: str, values: dict[str, str]) -> dict[str, Any]:
    """The stack `stack_name` as moto describes it, created from `body` unless moto has it already."""
    try:
        (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except cloudformation.exceptions.ClientError:
        cloudformation.create_stack(
            StackName=stack_name,
            TemplateBody=body,
            Parameters=[{"ParameterKey": key, "ParameterValue": value} for key, value in values.items()],
            Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"],
        )
        (stack,) = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    if stack["StackStatus"] != "CREATE_COMPLETE":
        raise TemplateError(
            f"stack {stack_name}: {stack['StackStatus']} {stack.get('StackStatusReason', '')}"
        )
    return dict(stack)


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


def create_engine_stack(template: Template, cloudformation: Any) -> dict[str, str]:
    """Creates the engine's stack (named like the template's stack) in moto's CloudFormation, or
    finds it; records every output on `template` and returns logical id -> physical name."""
    stack_name = template.stack_name
    body, values = engine_template(template)
    stack = _stack(cloudformation, stack_name, json.dumps(body), values)
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
