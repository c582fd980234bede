"""IAM checked locally: every AWS call a function makes is evaluated against its own execution role.

moto's IAM access control cannot do this for the services this project uses (it checks DynamoDB,
Secrets Manager, EventBridge and KMS calls against `*`, ignores conditions and crashes on `?`;
see docs/local-stack.md). So the local runtime checks the calls itself: a botocore hook on every
client sees each call's operation and parameters before it is sent, turns them into the IAM
action(s) and resource ARN(s) AWS authorizes, and evaluates them against the role's policies from
the translated template (explicit Deny wins, else an Allow is needed; `*`/`?` wildcards, Resource
and NotResource, Action and NotAction, the condition operators the template uses). A call its role
does not allow fails with AccessDenied as in AWS, before it reaches moto.

Which function is calling is a context variable set for the time of an invocation; threads that a
function starts through a ThreadPoolExecutor carry it (in Lambda every function is its own
process; here they share one). Calls made outside any invocation (test set-up, the stack itself)
are not checked: they stand for the account's administrator.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import botocore.handlers
from botocore.exceptions import ClientError

from local import service_limits

__all__ = [
    "Principal",
    "acting_as",
    "add_usage",
    "evaluate",
    "install",
    "like",
    "listed",
    "requested",
    "statements",
    "usage",
]

_SECURE_CONTEXT = {"aws:SecureTransport": "true"}  # the SDK talks HTTPS to AWS


@dataclass(frozen=True)
class Principal:
    """A function's execution role: its name, region, account and inline policy documents."""

    function_id: str
    role_name: str
    region: str
    account_id: str
    policies: tuple[dict[str, Any], ...] = field(default=())

    @property
    def arn(self) -> str:
        return f"arn:aws:sts::{self.account_id}:assumed-role/{self.role_name}/{self.function_id}"


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("iam_principal", default=None)
_usage: dict[str, set[tuple[str, str]]] = defaultdict(set)
_usage_lock = threading.Lock()


def usage() -> dict[str, set[tuple[str, str]]]:
    """The (action, resource) pairs each function was allowed and used so far in this process."""
    with _usage_lock:
        return {function: set(actions) for function, actions in _usage.items()}


def add_usage(function_id: str, pairs: Iterable[tuple[str, str]]) -> None:
    """Counts calls a function was allowed in one of its worker processes (local/execution.py)."""
    with _usage_lock:
        _usage[function_id].update((str(action), str(resource)) for action, resource in pairs)


@contextlib.contextmanager
def acting_as(principal: Principal | None) -> Iterator[None]:
    """Every AWS call made inside (and in executor threads started inside) runs under `principal`."""
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)


# ---------------------------------------------------------------------------- policy evaluation


def listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@functools.cache
def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """IAM wildcards: `*` any run of characters, `?` one character, nothing else special."""
    escaped = re.escape(pattern).replace(r"\*", ".*").replace(r"\?", ".")
    return re.compile(escaped, re.I | re.S if ignore_case else re.S)


def like(value: str, pattern: str, *, ignore_case: bool = False) -> bool:
    return _wildcard(pattern, ignore_case).fullmatch(value) is not None


_OPERATORS = {
    "StringEquals", "ArnEquals", "StringNotEquals", "ArnNotEquals", "StringLike", "ArnLike",
    "StringNotLike", "ArnNotLike", "Bool", "Null",
}  # fmt: skip


def _condition_holds(operator: str, tests: dict[str, Any], context: dict[str, str]) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator.removesuffix("IfExists")
    if base not in _OPERATORS:  # an operator this evaluator does not know must never pass silently
        raise ValueError(f"IAM condition operator {operator} is not evaluated locally")
    for key, wanted in tests.items():
        actual = context.get(key)
        if actual is None:
            if base == "Null":
                if str(wanted).lower() != "true":
                    return False
                continue
            if if_exists:
                continue
            return False
        wanted_values = [str(item) for item in listed(wanted)]
        match base:
            case "StringEquals" | "ArnEquals":
                ok = actual in wanted_values
            case "StringNotEquals" | "ArnNotEquals":
                ok = actual not in wanted_values
            case "StringLike" | "ArnLike":
                ok = any(like(actual, item) for item in wanted_values)
            case "StringNotLike" | "ArnNotLike":
                ok = not any(like(actual, item) for item in wanted_values)
            case "Bool":
                ok = actual.lower() in [item.lower() for item in wanted_values]
            case _:
                ok = str(wanted).lower() == "false"  # Null: the key is there
        if not ok:
            return False
    return True


def _statement_applies(
    statement: dict[str, Any], action: str, resource: str, context: dict[str, str]
) -> bool:
    if "Action" in statement:
        if not any(like(action, str(item), ignore_case=True) for item in listed(statement["Action"])):
            return False
    elif any(like(action, str(item), ignore_case=True) for item in listed(statement.get("NotAction", []))):
        return False
    if "Resource" in statement:
        if not any(like(resource, str(item)) for item in listed(statement["Resource"])):
            return False
    elif any(like(resource, str(item)) for item in listed(statement.get("NotResource", []))):
        return False
    conditions = statement.get("Condition") or {}
    return all(_condition_holds(operator, tests, context) for operator, tests in conditions.items())


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    return listed(document.get("Statement", []))


def evaluate(
    policies: tuple[dict[str, Any], ...], action: str, resource: str, context: dict[str, str] | None = None
) -> str:
    """ "Allow", "Deny" (an explicit Deny applies) or "ImplicitDeny" (no Allow applies)."""
    context = {**_SECURE_CONTEXT, **(context or {})}
    allowed = False
    for document in policies:
        for statement in statements(document):
            if not _statement_applies(statement, action, resource, context):
                continue
            if statement.get("Effect") == "Deny":
                return "Deny"
            allowed = allowed or statement.get("Effect") == "Allow"
    return "Allow" if allowed else "ImplicitDeny"


# ---------------------------------------------------------------------------- calls -> requests


@dataclass(frozen=True)
class _Call:
    region: str
    account: str
    operation: str
    params: dict[str, Any]

    def arn(self, service: str, resource: str) -> str:
        return f"arn:aws:{service}:{self.region}:{self.account}:{resource}"


def _dynamodb(call: _Call) -> list[tuple[str, str]]:
    def table(name: str, index: str | None = None) -> str:
        base = name if name.startswith("arn:") else call.arn("dynamodb", f"table/{name}")
        return f"{base}/index/{index}" if index else base

    params = call.params
    if call.operation in ("BatchGetItem", "BatchWriteItem"):
        return [(f"dynamodb:{call.operation}", table(name)) for name in params.get("RequestItems", {})]
    if call.operation in ("TransactWriteItems", "TransactGetItems"):
        # A transaction needs the permission of each action it carries, on each table.
        kinds = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem"}
        kinds |= {"ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}
        return [
            (f"dynamodb:{kinds[kind]}", table(item[kind]["TableName"]))
            for item in params.get("TransactItems", [])
            for kind in item
        ]
    if "TableName" in params:
        return [(f"dynamodb:{call.operation}", table(params["TableName"], params.get("IndexName")))]
    return [(f"dynamodb:{call.operation}", "*")]


_S3_ACTIONS = {
    "HeadObject": "GetObject",
    "ListObjectsV2": "ListBucket",
    "ListObjects": "ListBucket",
    "HeadBucket": "ListBucket",
    "ListObjectVersions": "ListBucketVersions",
    "CreateMultipartUpload": "PutObject",
    "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject",
    "DeleteObjects": "DeleteObject",
}


def _s3(call: _Call) -> list[tuple[str, str]]:
    params = call.params
    bucket = f"arn:aws:s3:::{params.get('Bucket', '*')}"
    action = _S3_ACTIONS.get(call.operation, call.operation)
    if call.operation == "DeleteObjects":
        keys = [item["Key"] for item in params.get("Delete", {}).get("Objects", [])]
        return [("s3:DeleteObject", f"{bucket}/{key}") for key in keys]
    if call.operation in ("GetObject", "HeadObject") and params.get("VersionId"):
        action = "GetObjectVersion"
    if call.operation == "CopyObject":
        source = params.get("CopySource")
        source_arn = (
            f"arn:aws:s3:::{source['Bucket']}/{source['Key']}"
            if isinstance(source, dict)
            else f"arn:aws:s3:::{str(source).lstrip('/').split('?')[0]}"
        )
        return [("s3:GetObject", source_arn), ("s3:PutObject", f"{bucket}/{params['Key']}")]
    return [(f"s3:{action}", f"{bucket}/{params['Key']}" if "Key" in params else bucket)]


_SQS_ACTIONS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


def _sqs(call: _Call) -> list[tuple[str, str]]:
    action = "sqs:" + _SQS_ACTIONS.get(call.operation, call.operation)
    if "QueueUrl" in call.params:
        account, name = urlsplit(call.params["QueueUrl"]).path.strip("/").split("/")[-2:]
        return [(action, f"arn:aws:sqs:{call.region}:{account}:{name}")]
    if "QueueName" in call.params:
        return [(action, call.arn("sqs", call.params["QueueName"]))]
    return [(action, "*")]


def _secretsmanager(call: _Call) -> list[tuple[str, str]]:
    secret = call.params.get("SecretId") or call.params.get("Name")
    if not secret:
        return [(f"secretsmanager:{call.operation}", "*")]
    # A secret's ARN ends in "-" and six random characters, also when the call names it.
    arn = secret if secret.startswith("arn:") else call.arn("secretsmanager", f"secret:{secret}-AbCdEf")
    return [(f"secretsmanager:{call.operation}", arn)]


def _events(call: _Call) -> list[tuple[str, str]]:
    if call.operation == "PutEvents":
        buses = {str(entry.get("EventBusName") or "default") for entry in call.params.get("Entries", [])}
        return [
            ("events:PutEvents", bus if bus.startswith("arn:") else call.arn("events", f"event-bus/{bus}"))
            for bus in sorted(buses)
        ]
    return [(f"events:{call.operation}", "*")]


def _kms(call: _Call) -> list[tuple[str, str]]:
    key = str(call.params.get("KeyId") or "*")
    if key != "*" and not key.startswith("arn:"):
        key = call.arn("kms", key if key.startswith("alias/") else f"key/{key}")
    return [(f"kms:{call.operation}", key)]


def _lambda(call: _Call) -> list[tuple[str, str]]:
    name = str(call.params.get("FunctionName") or "*")
    arn = name if name.startswith("arn:") or name == "*" else call.arn("lambda", f"function:{name}")
    return [(f"lambda:{call.operation}", arn)]


_RESOURCES: dict[str, Callable[[_Call], list[tuple[str, str]]]] = {
    "dynamodb": _dynamodb,
    "s3": _s3,
    "sqs": _sqs,
    "secretsmanager": _secretsmanager,
    "events": _events,
    "kms": _kms,
    "lambda": _lambda,
}


def requested(
    service: str, operation: str, params: dict[str, Any], *, region: str, account: str
) -> list[tuple[str, str]]:
    """The (IAM action, resource ARN) pairs AWS authorizes for one API call."""
    call = _Call(region, account, operation, params)
    mapper = _RESOURCES.get(service)
    return mapper(call) if mapper else [(f"{service}:{operation}", "*")]


# ---------------------------------------------------------------------------- the botocore hook

_NO_AUTHORIZATION = {("sts", "GetCallerIdentity")}  # AWS answers these for any principal


def _denied_code(service: str) -> str:
    return "AccessDenied" if service in ("s3", "sqs", "sts", "iam") else "AccessDeniedException"


def _check_call(params: dict[str, Any], model: Any, **_: Any) -> None:
    principal = _current.get()
    if principal is None:
        return
    service = model.service_model.signing_name
    if (service, model.name) in _NO_AUTHORIZATION:
        return
    for action, resource in requested(
        service, model.name, params, region=principal.region, account=principal.account_id
    ):
        decision = evaluate(principal.policies, action, resource)
        if decision != "Allow":
            why = (
                "an explicit deny in an identity-based policy"
                if decision == "Deny"
                else f"no identity-based policy allows the {action} action"
            )
            message = (
                f"User: {principal.arn} is not authorized to perform: {action} on resource: {resource} "
                f"because {why}"
            )
            error: Any = {
                "Error": {"Code": _denied_code(service), "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": 403},
            }
            raise ClientError(error, model.name)
        with _usage_lock:
            _usage[principal.function_id].add((action, resource))


_installed = threading.Lock()
_HOOK = ("before-parameter-build", _check_call)


def install() -> None:
    """Checks every client made from now on (botocore registers its built-in handlers on each new
    session): IAM, and AWS's size limits (local/service_limits.py); and lets executor threads
    carry the function they work for."""
    with _installed:
        if _HOOK in botocore.handlers.BUILTIN_HANDLERS:
            return
        botocore.handlers.BUILTIN_HANDLERS.append(_HOOK)
        # The size limits moto lets pass are checked on the same clients, for every caller.
        botocore.handlers.BUILTIN_HANDLERS.append(("before-parameter-build", service_limits.check_call))
        submit = ThreadPoolExecutor.submit

        def submit_in_context(self: ThreadPoolExecutor, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
            return submit(self, contextvars.copy_context().run, fn, *args, **kwargs)

        ThreadPoolExecutor.submit = submit_in_context  # type: ignore[method-assign,assignment]
