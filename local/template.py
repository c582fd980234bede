"""Reads the SAM template (the single source of truth) for the local stack.

`Template` parses template.yaml and has it translated by aws-sam-translator (`translated()`), the
SAM CLI's own translator: functions (Globals merged), their roles, the API's routes and authorizer
(its OpenAPI body), event source mappings, rules and schedules are read from that translation, as
CloudFormation reads them.

Values are evaluated as CloudFormation evaluates them, by moto's CloudFormation: `Template`
evaluates only references (Ref, Fn::GetAtt: the values recorded with `set_attribute` once a
resource exists, the parameters, the names the local runtime gives its functions, aliases, layers
and APIs) and conditions (Fn::Equals, Fn::Not, Fn::And, Fn::Or, Condition), which decide which
resources exist before anything is created. Every other function (Fn::Sub, Fn::If, Fn::Join,
Fn::FindInMap, ...) goes, with those references as Parameters, to a stack of moto's
CloudFormation (`evaluate_with`; local/engine.py); `local.aws.create_resources` sets that up.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypedDict, Unpack
from urllib.parse import unquote

import yaml

from local.iam import Principal

__all__ = ["ApiRoute", "Evaluator", "FunctionSpec", "Template", "TemplateError", "expression_key"]


class TemplateError(Exception):
    """The template cannot be read or one of its values cannot be evaluated locally."""


_LOCAL_CODE = "local-code"  # the bucket name standing for this checkout in translated Code locations


class _NoManagedPolicies:
    """The translator's managed-policy loader: only ARNs are used here, never looked up."""

    def load(self) -> dict[str, str]:
        return {}


class _NoValue:
    """What `!Ref AWS::NoValue` evaluates to: the enclosing key or list item disappears."""

    def __repr__(self) -> str:
        return "AWS::NoValue"

    def __deepcopy__(self, memo: dict[int, Any]) -> _NoValue:
        return self


NO_VALUE: Final = _NoValue()

# ---------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """Safe loader that keeps the short-form intrinsics and, like CloudFormation, reads
    unquoted dates as strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_intrinsic(loader: _Loader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - PyYAML has no other node kinds
        raise TemplateError(f"unexpected YAML node for !{tag_suffix}")
    if tag_suffix in ("Ref", "Condition"):
        return {tag_suffix: value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


_Loader.add_multi_constructor("!", _construct_intrinsic)


def _is_intrinsic(value: Any) -> bool:
    if not isinstance(value, dict) or len(value) != 1:
        return False
    (key,) = value
    return key == "Ref" or key == "Condition" or str(key).startswith("Fn::")


# ---------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class FunctionSpec:
    """What the local stack needs to run one AWS::Serverless::Function."""

    logical_id: str
    code_dir: Path
    module: str  # "app" for Handler "app.lambda_handler"; may be dotted ("pkg.app")
    attribute: str  # "lambda_handler"
    timeout: int  # seconds (Globals merged)
    memory: int  # MiB (Globals merged)
    environment: dict[str, str]  # Globals.Function variables merged with the function's own, resolved
    function_name: str = ""  # physical name (FunctionName or "<stack>-<LogicalId>")
    runtime: str = ""
    handler: str = ""
    layer_dirs: tuple[Path, ...] = ()  # local layers (AWS::Serverless::LayerVersion) of the function
    snap_start: bool = False  # SnapStart on published versions: the INIT Lambda runs is a snap-start one


_SEGMENT_PARAM = re.compile(r"^\{([A-Za-z0-9._-]+)(\+?)\}$")


@dataclass(frozen=True)
class ApiRoute:
    """One `Type: Api` event of a function."""

    function_id: str
    method: str  # upper case; ANY matches every method
    path: str  # as in the template, e.g. /api/core/mail/send/{account}
    authorized: bool  # False when there is no authorizer or the event sets Auth.Authorizer: NONE
    event_name: str = ""
    api_id: str = ""  # logical id of the AWS::Serverless::Api (ServerlessRestApi when implicit)
    authorizer: str | None = None  # authorizer name, None when not authorized
    identity_header: str = "Authorization"  # where the authorizer reads the token

    def match(self, method: str, path: str) -> dict[str, str] | None:
        """Path parameters (percent-decoded, as API Gateway REST hands them over) when this
        route serves `method` on `path` (the raw, still percent-encoded request path without
        the query string), else None. `{name+}` is greedy and must be last."""
        if self.method != "ANY" and method.upper() != self.method:
            return None
        return match_path(self.path, path)

    def specificity(self) -> tuple[tuple[int, ...], int]:
        """Sort key: the smaller, the more specific (literal segments beat {param}, which beats
        {greedy+}; an explicit method beats ANY). API Gateway picks the most specific route."""
        ranks = []
        for segment in _split_path(self.path):
            m = _SEGMENT_PARAM.match(segment)
            ranks.append(0 if m is None else (2 if m.group(2) else 1))
        return tuple(ranks), 1 if self.method == "ANY" else 0


def _split_path(path: str) -> list[str]:
    path = path.strip()
    if len(path) > 1 and path.endswith("/"):
        path = path[:-1]  # API Gateway REST treats /x/ like /x
    if path in ("", "/"):
        return []
    return path.lstrip("/").split("/")


def match_path(template_path: str, request_path: str) -> dict[str, str] | None:
    """Matches a request path against a route path of the template; see `ApiRoute.match`."""
    pattern = _split_path(template_path)
    actual = _split_path(request_path)
    params: dict[str, str] = {}
    for index, segment in enumerate(pattern):
        m = _SEGMENT_PARAM.match(segment)
        if m is not None and m.group(2):  # greedy {proxy+}: the rest, at least one segment
            rest = actual[index:]
            if not rest or any(part == "" for part in rest):
                return None
            params[m.group(1)] = unquote("/".join(rest))
            return params
        if index >= len(actual) or actual[index] == "":
            return None
        if m is not None:
            params[m.group(1)] = unquote(actual[index])
        elif unquote(actual[index]) != segment:
            return None
    if len(actual) != len(pattern):
        return None
    return params


# ---------------------------------------------------------------------------- Template

_PSEUDO_PARAMETERS: Final = (
    "AWS::Region",
    "AWS::AccountId",
    "AWS::StackName",
    "AWS::StackId",
    "AWS::Partition",
    "AWS::URLSuffix",
    "AWS::NoValue",
    "AWS::NotificationARNs",
)

# Resource type -> the property that sets the physical name of a resource the local runtime or an
# adapter creates (the engine's resources are named by moto's CloudFormation, local/engine.py).
_NAME_PROPERTY: Final = {
    "AWS::Events::Rule": "Name",
    "AWS::Scheduler::Schedule": "Name",
    "AWS::Lambda::Function": "FunctionName",
    "AWS::Lambda::LayerVersion": "LayerName",
}
# Types whose values are only known once the engine or an adapter created them (local/aws.py).
_CREATED_IN_MOTO: Final = (
    "AWS::DynamoDB::Table",
    "AWS::S3::Bucket",
    "AWS::SQS::Queue",
    "AWS::Events::EventBus",
    "AWS::KMS::Key",
    "AWS::IAM::Role",
    "AWS::Cognito::UserPool",
    "AWS::Cognito::UserPoolClient",
)


# Evaluated here: references (the values the local stack recorded or gives its stand-ins) and
# conditions. Every other intrinsic function is evaluated by moto's CloudFormation.
_EVALUATED_HERE: Final = ("Ref", "Condition", "Fn::GetAtt", "Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or")

Evaluator = Callable[[list[Any]], dict[str, Any]]  # expressions -> expression_key -> value


def expression_key(expression: Any) -> str:
    """What an evaluated expression is known by."""
    return json.dumps(expression, sort_keys=True, default=str)


@dataclass
class _Values:
    """The values moto's CloudFormation evaluated for one stack (shared by a template and its
    translation), and the evaluator that asks it."""

    known: dict[str, Any] = field(default_factory=dict)
    evaluate: Evaluator | None = None


def _collect_evaluated(value: Any, found: list[Any]) -> None:
    """Appends to `found` every outermost intrinsic of `value` that moto evaluates."""
    if isinstance(value, list):
        for item in value:
            _collect_evaluated(item, found)
    elif isinstance(value, dict):
        if _is_intrinsic(value) and next(iter(value)) not in _EVALUATED_HERE:
            found.append(value)
            return
        for item in value.values():
            _collect_evaluated(item, found)


def _as_string(value: Any, where: str) -> str:
    """CloudFormation's string conversion of a resolved scalar."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise TemplateError(f"{where}: expected a string, got {value!r}")


class StackOptions(TypedDict, total=False):
    """What Template.load passes on to Template: the local stack the template is evaluated for."""

    stack_name: str
    parameter_overrides: dict[str, str] | None
    region: str
    account_id: str
    endpoint_url: str | None


class Template:
    """A SAM template evaluated for one local stack (name, region, account, parameters)."""

    def __init__(
        self,
        data: dict[str, Any],
        *,
        path: Path,
        stack_name: str = "mail-service",
        parameter_overrides: dict[str, str] | None = None,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        endpoint_url: str | None = None,
    ) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
            raise TemplateError(f"{path}: not a CloudFormation template (no Resources)")
        self.path = path
        self.base_dir = path.parent
        self.data = data
        self.stack_name = stack_name
        self.region = region
        self.account_id = account_id
        self.endpoint_url = endpoint_url.rstrip("/") if endpoint_url else None
        self._attributes: dict[tuple[str, str], Any] = {}
        self._values = _Values()
        self._condition_values: dict[str, bool] = {}
        self.parameter_overrides = dict(parameter_overrides or {})
        self.parameters = self._parameter_values(self.parameter_overrides)
        self._translated: Template | None = None
        self.all_resources: dict[str, dict[str, Any]] = data["Resources"]
        # Only the resources whose Condition holds exist in the stack.
        self.resources: dict[str, dict[str, Any]] = {
            logical_id: resource
            for logical_id, resource in self.all_resources.items()
            if "Condition" not in resource or self.condition(resource["Condition"])
        }

    @classmethod
    def load(cls, path: Path, **stack: Unpack[StackOptions]) -> Template:
        """The template at `path`; `stack` as Template's keyword arguments (their defaults)."""
        path = Path(path).resolve()
        try:
            data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # a SafeLoader subclass
        except yaml.YAMLError as error:
            raise TemplateError(f"{path}: {error}") from error
        return cls(data, path=path, **stack)

    # ------------------------------------------------------------------ parameters, conditions

    def _parameter_values(self, overrides: dict[str, str]) -> dict[str, Any]:
        declared: dict[str, Any] = self.data.get("Parameters") or {}
        unknown = sorted(set(overrides) - set(declared))
        if unknown:
            raise TemplateError(f"parameter overrides not declared in the template: {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for name, spec in declared.items():
            spec = spec or {}
            if name in overrides:
                raw: Any = overrides[name]
            elif "Default" in spec:
                raw = spec["Default"]
            else:
                raise TemplateError(f"parameter {name} has no Default and no override")
            value = _as_string(raw, f"parameter {name}")
            allowed = spec.get("AllowedValues")
            if allowed is not None and value not in [_as_string(a, name) for a in allowed]:
                raise TemplateError(f"parameter {name}={value!r} is not one of {allowed}")
            type_ = str(spec.get("Type", "String"))
            if type_ == "CommaDelimitedList" or type_.startswith("List<"):
                values[name] = [item.strip() for item in value.split(",")] if value else []
            else:
                values[name] = value
        return values

    def condition(self, name: str) -> bool:
        """The value of a condition of the Conditions section."""
        if name in self._condition_values:
            return self._condition_values[name]
        conditions: dict[str, Any] = self.data.get("Conditions") or {}
        if name not in conditions:
            raise TemplateError(f"unknown condition {name}")
        self._condition_values[name] = False  # breaks cycles (CloudFormation rejects them too)
        value = self._resolve(conditions[name])
        if not isinstance(value, bool):
            raise TemplateError(f"condition {name} does not evaluate to true or false: {value!r}")
        self._condition_values[name] = value
        return value

    # ------------------------------------------------------------------ attributes and names

    def set_attribute(self, logical_id: str, attribute: str, value: Any) -> None:
        """Records the actual value of a resource attribute (attribute "Ref" for what !Ref gives)."""
        self._attributes[(logical_id, attribute)] = value

    def attribute(self, logical_id: str, attribute: str) -> Any:
        """A value recorded with `set_attribute`, None when none was."""
        return self._attributes.get((logical_id, attribute))

    def resources_of_type(self, type_: str) -> dict[str, dict[str, Any]]:
        """The raw definitions of the stack's resources (Condition holding) of one type."""
        return {lid: res for lid, res in self.resources.items() if res.get("Type") == type_}

    def _resource(self, logical_id: str) -> dict[str, Any]:
        if logical_id in self.resources:
            return self.resources[logical_id]
        if logical_id in self.all_resources:
            raise TemplateError(f"{logical_id} is not created: its condition is false")
        raise TemplateError(f"unknown resource or parameter {logical_id}")

    def physical_name(self, logical_id: str) -> str:
        """The name of a resource the local runtime creates: an explicit name property wins, else
        "<stack>-<LogicalId>". Names of resources created in moto are recorded as their Ref."""
        resource = self._resource(logical_id)
        if resource.get("Type") in _CREATED_IN_MOTO:
            return _as_string(self._ref(logical_id), f"{logical_id} name")
        name_property = _NAME_PROPERTY.get(str(resource.get("Type", "")))
        properties = resource.get("Properties") or {}
        if name_property and name_property in properties:
            name = self.resolve(properties[name_property])
            if name is not None:
                return _as_string(name, f"{logical_id}.{name_property}")
        return f"{self.stack_name}-{logical_id}"

    def _arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account_id}:{resource}"

    def _api_id(self, logical_id: str) -> str:
        digest = hashlib.sha256(f"{self.stack_name}/{logical_id}".encode()).digest()
        alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
        return "".join(alphabet[b % len(alphabet)] for b in digest[:10])

    def _unknown_yet(self, logical_id: str, what: str) -> TemplateError:
        return TemplateError(
            f"{what} of {logical_id} is only known once the resource exists "
            "(run local.aws.create_resources first)"
        )

    def _ref(self, name: str) -> Any:
        if name in _PSEUDO_PARAMETERS:
            return {
                "AWS::Region": self.region,
                "AWS::AccountId": self.account_id,
                "AWS::StackName": self.stack_name,
                "AWS::StackId": self._arn(
                    "cloudformation", f"stack/{self.stack_name}/00000000-0000-0000-0000-000000000000"
                ),
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::NoValue": NO_VALUE,
                "AWS::NotificationARNs": [],
            }[name]
        if name in self.parameters:
            return self.parameters[name]
        known = self._attributes.get((name, "Ref"))
        if known is not None:
            return known
        if name.endswith(".Alias"):  # SAM: the alias AutoPublishAlias makes
            function_id = name.removesuffix(".Alias")
            aliases = self.translated().resources_of_type("AWS::Lambda::Alias")
            (alias_id,) = [
                a for a, r in aliases.items() if r["Properties"]["FunctionName"] == {"Ref": function_id}
            ]
            return self.translated()._ref(alias_id)
        resource = self._resource(name)
        match resource.get("Type"):
            case "AWS::Serverless::Api" | "AWS::ApiGateway::RestApi":
                return self._api_id(name)
            case "AWS::Serverless::LayerVersion" | "AWS::Lambda::LayerVersion":
                return self._arn("lambda", f"layer:{self.physical_name(name)}:1")
            case "AWS::Lambda::Alias":  # the alias's ARN: the function's, qualified with its name
                properties = resource["Properties"]
                return f"{self.resolve({'Fn::GetAtt': [properties['FunctionName']['Ref'], 'Arn']})}:{properties['Name']}"
            case type_ if type_ in _CREATED_IN_MOTO:
                raise self._unknown_yet(name, "!Ref")
            case _:
                return self.physical_name(name)

    def _get_att(self, logical_id: str, attribute: str) -> Any:
        known = self._attributes.get((logical_id, attribute))
        if known is not None:
            return known
        type_ = self._resource(logical_id).get("Type")
        if type_ in ("AWS::Serverless::Function", "AWS::Lambda::Function") and attribute == "Arn":
            return self._arn("lambda", f"function:{self.physical_name(logical_id)}")
        if type_ in _CREATED_IN_MOTO:
            raise self._unknown_yet(logical_id, attribute)
        raise TemplateError(f"Fn::GetAtt {logical_id}.{attribute} ({type_}) is not supported locally")

    # ------------------------------------------------------------------ intrinsics

    def resolve(self, value: Any) -> Any:
        """Evaluates every intrinsic in `value` (a fresh structure is returned). Keys and list
        items that evaluate to AWS::NoValue disappear; a top-level AWS::NoValue gives None."""
        resolved = self._resolve(value)
        return None if resolved is NO_VALUE else resolved

    def _resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            if _is_intrinsic(value):
                ((key, argument),) = value.items()
                return self._intrinsic(key, argument)
            result = {}
            for key, item in value.items():
                resolved = self._resolve(item)
                if resolved is not NO_VALUE:
                    result[key] = resolved
            return result
        if isinstance(value, list):
            return [r for r in (self._resolve(item) for item in value) if r is not NO_VALUE]
        return value

    def _intrinsic(self, key: str, argument: Any) -> Any:
        match key:
            case "Ref":
                return self._ref(str(self._resolve(argument)))
            case "Condition":
                return self.condition(str(argument))
            case "Fn::GetAtt":
                parts = self._resolve(argument)
                if isinstance(parts, str):
                    parts = parts.split(".", 1)
                if not isinstance(parts, list) or len(parts) != 2:
                    raise TemplateError(f"Fn::GetAtt needs [resource, attribute], got {argument!r}")
                return self._get_att(str(parts[0]), str(parts[1]))
            case "Fn::Equals":
                left, right = self._pair(key, argument)
                return self._comparable(left) == self._comparable(self._resolve(right))
            case "Fn::Not":
                (operand,) = self._list(key, argument, 1, 1)
                return not self._bool(key, operand)
            case "Fn::And":
                return all(self._bool(key, item) for item in self._list(key, argument, 2, 10))
            case "Fn::Or":
                return any(self._bool(key, item) for item in self._list(key, argument, 2, 10))
        return self._evaluated({key: argument})

    def _evaluated(self, expression: dict[str, Any]) -> Any:
        """The value moto's CloudFormation gives `expression` (Fn::Sub, Fn::If, Fn::Join, ...)."""
        key = expression_key(expression)
        if key not in self._values.known:
            if self._values.evaluate is None:
                raise TemplateError(
                    f"{json.dumps(expression)[:200]} is evaluated by moto's CloudFormation, only once the "
                    "stack's resources exist (run local.aws.create_resources first)"
                )
            self._values.known.update(self._values.evaluate([expression]))
        return copy.deepcopy(self._values.known[key])

    def evaluate_with(self, evaluate: Evaluator) -> None:
        """Hands the intrinsics other than Ref, Fn::GetAtt and the condition functions to
        `evaluate` (moto's CloudFormation, local/engine.py) from now on."""
        self._values.evaluate = evaluate

    def evaluate_all(self) -> None:
        """Has every value of the translated template (resources and Outputs) evaluated at once,
        so that it is known even when moto is gone (see local.aws.create_resources_elsewhere)."""
        if self._values.evaluate is None:
            raise TemplateError("no evaluator: run local.aws.create_resources first")
        translated = self.translated()
        found: list[Any] = []
        _collect_evaluated([translated.resources, translated.data.get("Outputs") or {}], found)
        pending = {expression_key(e): e for e in found if expression_key(e) not in self._values.known}
        if pending:
            self._values.known.update(self._values.evaluate(list(pending.values())))

    def _list(self, key: str, argument: Any, least: int, most: int) -> list[Any]:
        if not isinstance(argument, list) or not least <= len(argument) <= most:
            raise TemplateError(f"{key}: bad arguments {argument!r}")
        return argument

    def _pair(self, key: str, argument: Any) -> tuple[Any, Any]:
        """The two arguments of a function, the first resolved, the second raw."""
        first, second = self._list(key, argument, 2, 2)
        return self._resolve(first), second

    def _comparable(self, value: Any) -> Any:
        if isinstance(value, (bool, int, float)):
            return _as_string(value, "Fn::Equals")
        return value

    def _bool(self, key: str, value: Any) -> bool:
        resolved = self._resolve(value)
        if not isinstance(resolved, bool):
            raise TemplateError(f"{key}: {value!r} is not a condition")
        return resolved

    # ------------------------------------------------------------------ the translated template

    def translated(self) -> Template:
        """The template as CloudFormation reads it: SAM's own translator (aws-sam-translator)
        expands the serverless resources (roles with their policies, permissions, event source
        mappings, schedules, the API's stage); values resolve against the same stack, so
        attributes recorded on this template hold there too."""
        if "Transform" not in self.data:  # translated already
            return self
        if self._translated is None:
            from samtranslator.translator.transform import transform

            logging.getLogger("samtranslator").setLevel(logging.ERROR)
            source = copy.deepcopy(self.data)
            for resource in source["Resources"].values():
                properties = resource.get("Properties") or {}
                for key in ("CodeUri", "ContentUri"):  # the translator wants S3 locations
                    if isinstance(properties.get(key), str):
                        properties[key] = f"s3://{_LOCAL_CODE}/{properties[key].rstrip('/')}"
            pseudo = {"AWS::Region": self.region, "AWS::AccountId": self.account_id}
            os.environ.setdefault("AWS_DEFAULT_REGION", self.region)
            data = transform(source, {**self.parameters, **pseudo}, _NoManagedPolicies())
            translated = Template(
                data,
                path=self.path,
                stack_name=self.stack_name,
                parameter_overrides=self.parameter_overrides,
                region=self.region,
                account_id=self.account_id,
                endpoint_url=self.endpoint_url,
            )
            translated._attributes = self._attributes  # one stack: what one learns, both know
            translated._values = self._values
            self._translated = translated
        return self._translated

    def execution_role(self, function_id: str) -> Principal:
        """The execution role of a function as the translated template defines it."""
        translated = self.translated()
        role = translated.resources[function_id]["Properties"]["Role"]
        role_id = role["Fn::GetAtt"][0] if isinstance(role, dict) and "Fn::GetAtt" in role else None
        if role_id is None:
            raise TemplateError(f"{function_id}: only a role defined in the template is checked locally")
        properties = translated.resources[role_id].get("Properties") or {}
        documents = [policy["PolicyDocument"] for policy in properties.get("Policies") or []]
        return Principal(
            function_id=function_id,
            role_name=translated.physical_name(role_id),
            region=self.region,
            account_id=self.account_id,
            policies=tuple(translated.resolve(documents)),
        )

    # ------------------------------------------------------------------ functions and events

    def functions(self) -> dict[str, FunctionSpec]:
        """Every function of the stack as CloudFormation creates it (Globals merged), by logical id."""
        return {logical_id: self.function(logical_id) for logical_id in self._lambda_functions()}

    def _lambda_functions(self) -> dict[str, dict[str, Any]]:
        return self.translated().resources_of_type("AWS::Lambda::Function")

    def function(self, logical_id: str, *, resolve_environment: bool = True) -> FunctionSpec:
        """The spec of one function from the translated template; with resolve_environment=False
        its environment is left empty (for callers that take the values from a running stack)."""
        translated = self.translated()
        if logical_id not in self._lambda_functions():
            raise TemplateError(f"{logical_id} is not a function of this template")
        properties = translated.resources[logical_id]["Properties"]
        where = f"function {logical_id}"
        handler = _as_string(translated.resolve(properties.get("Handler")), f"{where} Handler")
        module, _, attribute = handler.rpartition(".")
        if not module or not attribute:
            raise TemplateError(f"{where}: Handler {handler!r} is not module.function")
        variables = (properties.get("Environment") or {}).get("Variables") or {}
        environment = {
            name: _as_string(value, f"{where} environment variable {name}")
            for name, value in ((translated.resolve(variables) or {}) if resolve_environment else {}).items()
        }
        return FunctionSpec(
            logical_id=logical_id,
            code_dir=self._code_dir(properties.get("Code"), where),
            module=module,
            attribute=attribute,
            timeout=int(translated.resolve(properties.get("Timeout", 3))),
            memory=int(translated.resolve(properties.get("MemorySize", 128))),
            environment=environment,
            function_name=translated.physical_name(logical_id),
            runtime=str(translated.resolve(properties.get("Runtime", ""))),
            handler=handler,
            layer_dirs=tuple(self._layer_dir(layer) for layer in properties.get("Layers") or []),
            snap_start=(properties.get("SnapStart") or {}).get("ApplyOn") == "PublishedVersions",
        )

    def _code_dir(self, code: Any, where: str) -> Path:
        """The local folder of a translated Code/Content location (see `translated`)."""
        if not isinstance(code, dict) or code.get("S3Bucket") != _LOCAL_CODE:
            raise TemplateError(f"{where}: only a local CodeUri/ContentUri folder runs locally, got {code!r}")
        return (self.base_dir / str(code["S3Key"])).resolve()

    def _layer_dir(self, layer: Any) -> Path:
        translated = self.translated()
        resource = translated.resources.get(layer.get("Ref", "") if isinstance(layer, dict) else "") or {}
        if resource.get("Type") != "AWS::Lambda::LayerVersion":
            raise TemplateError(f"layer {layer!r}: only a layer of this template runs locally")
        layer_dir = self._code_dir(resource["Properties"].get("Content"), f"layer {layer!r}")
        # A layer built without BuildMethod ships its packages under python/ (the build metadata is
        # SAM's, not part of what CloudFormation gets).
        built = any(
            "BuildMethod" in (original.get("Metadata") or {})
            for original in self.resources_of_type("AWS::Serverless::LayerVersion").values()
            if self.resolve((original.get("Properties") or {}).get("ContentUri"))
            == str(layer_dir.relative_to(self.base_dir))
        )
        return layer_dir / "python" if (layer_dir / "python").is_dir() and not built else layer_dir

    def api_definition(self, api_id: str) -> dict[str, Any]:
        """The OpenAPI body API Gateway gets for a REST API (the translator writes it), resolved."""
        translated = self.translated()
        api = translated.resources_of_type("AWS::ApiGateway::RestApi").get(api_id) or {}
        body = translated.resolve((api.get("Properties") or {}).get("Body") or {})
        return body if isinstance(body, dict) else {}

    def api_routes(self) -> list[ApiRoute]:
        """Every route of every REST API, read from the OpenAPI bodies as API Gateway reads them:
        the function behind each method's Lambda proxy integration, and its Cognito authorizer."""
        translated = self.translated()
        routes: list[ApiRoute] = []
        for api_id, api in translated.resources_of_type("AWS::ApiGateway::RestApi").items():
            body = (api.get("Properties") or {}).get("Body") or {}
            schemes = (
                (body.get("components") or {}).get("securitySchemes") or body.get("securityDefinitions") or {}
            )
            for path, methods in (body.get("paths") or {}).items():
                for method, operation in methods.items():
                    integration = (operation or {}).get("x-amazon-apigateway-integration") or {}
                    function_id = translated._integrated_function(integration.get("uri"))
                    if function_id is None:
                        continue
                    names = [name for requirement in operation.get("security") or [] for name in requirement]
                    authorizer = next(
                        (n for n in names if "x-amazon-apigateway-authorizer" in schemes.get(n, {})), None
                    )
                    routes.append(
                        ApiRoute(
                            function_id=function_id,
                            method="ANY" if method == "x-amazon-apigateway-any-method" else method.upper(),
                            path=path,
                            authorized=authorizer is not None,
                            api_id=api_id,
                            authorizer=authorizer,
                            identity_header=str(schemes[authorizer].get("name", "Authorization"))
                            if authorizer
                            else "Authorization",
                        )
                    )
        return routes

    _INVOCATION = re.compile(r"functions/\$\{([A-Za-z0-9]+)(?:\.Arn)?\}/invocations")

    def _integrated_function(self, uri: Any) -> str | None:
        """The function (logical id) a Lambda proxy integration's URI invokes, through its alias."""
        found = self._INVOCATION.search(json.dumps(uri))
        return self._function_of({"Ref": found.group(1)}) if found else None

    def event_sources(self, kind: str) -> list[tuple[str, str, dict[str, Any]]]:
        """(function id, logical id, resolved Properties) of every trigger of one kind, read from
        the translated template as CloudFormation creates them: "SQS" and "DynamoDB" (event source
        mappings), "EventBridgeRule" (one per rule target; EventBusName, EventPattern), "Schedule"
        (EventBridge Scheduler schedules and rules with a ScheduleExpression; its target's Input)."""
        translated = self.translated()
        found: list[tuple[str, str, dict[str, Any]]] = []
        if kind in ("SQS", "DynamoDB"):
            for logical_id, mapping in translated.resources_of_type(
                "AWS::Lambda::EventSourceMapping"
            ).items():
                properties = mapping["Properties"]
                source = properties["EventSourceArn"]
                from_stream = (
                    isinstance(source, dict) and source.get("Fn::GetAtt", [None, None])[1] == "StreamArn"
                )
                if from_stream == (kind == "DynamoDB"):
                    function_id = translated._function_of(properties["FunctionName"])
                    found.append((function_id, logical_id, translated.resolve(properties)))
            return found
        for type_ in ("AWS::Events::Rule", "AWS::Scheduler::Schedule"):
            for logical_id, trigger in translated.resources_of_type(type_).items():
                properties = trigger["Properties"]
                scheduled = "ScheduleExpression" in properties
                if scheduled != (kind == "Schedule") or kind not in ("Schedule", "EventBridgeRule"):
                    continue
                for target in properties.get("Targets") or [properties.get("Target")]:
                    resolved = translated.resolve(
                        {key: value for key, value in properties.items() if key != "Targets"}
                    )
                    resolved["Input"] = translated.resolve(target.get("Input"))
                    found.append((translated._function_of(target["Arn"]), logical_id, resolved))
        return found

    def async_invoke_config(self, function_id: str) -> dict[str, Any]:
        """The function's EventInvokeConfig (retries, OnFailure destination), resolved; {} if none."""
        translated = self.translated()
        for config in translated.resources_of_type("AWS::Lambda::EventInvokeConfig").values():
            if config["Properties"].get("FunctionName") == {"Ref": function_id}:
                resolved: dict[str, Any] = translated.resolve(config["Properties"])
                return resolved
        return {}

    def _function_of(self, reference: Any) -> str:
        """The function (logical id) a Ref/GetAtt names, directly or through its alias."""
        target = reference.get("Ref") if isinstance(reference, dict) else None
        if isinstance(reference, dict) and "Fn::GetAtt" in reference:
            target = reference["Fn::GetAtt"][0]
        resource = self.resources.get(str(target)) or {}
        if resource.get("Type") == "AWS::Lambda::Alias":
            return str(resource["Properties"]["FunctionName"]["Ref"])
        if resource.get("Type") != "AWS::Lambda::Function":
            raise TemplateError(f"{reference!r} is no function of this template")
        return str(target)

    def outputs(self) -> dict[str, Any]:
        """The resolved Outputs whose Condition holds."""
        result: dict[str, Any] = {}
        for name, output in (self.data.get("Outputs") or {}).items():
            if "Condition" in output and not self.condition(output["Condition"]):
                continue
            result[name] = self.resolve(output.get("Value"))
        return result
