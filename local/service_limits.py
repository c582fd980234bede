"""AWS's size limits that moto 5.2.5 lets pass, refused here where the service refuses them.

moto already refuses a DynamoDB item over 400 KB and more than 10 PutEvents entries. It accepts an
SQS message over 256 KB and an EventBridge entry over 256 KB; AWS does not. A botocore hook on
every client (installed with the IAM check, local/iam.py) refuses them before they are sent,
with the error the service answers. The 256 KB limit of an asynchronous Lambda invocation's event
is enforced by the local runtime (local/gateway.py, FunctionRuntime.invoke).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

__all__ = ["MESSAGE_LIMIT", "check_call", "event_entry_size", "sqs_message_size"]

MESSAGE_LIMIT = 262_144  # bytes: SQS message (body + attributes), batch, PutEvents entries, async event


def sqs_message_size(body: str, attributes: dict[str, Any] | None = None) -> int:
    """Body plus every attribute's name, type and value, as SQS counts them."""
    size = len(body.encode())
    for name, attribute in (attributes or {}).items():
        value = attribute.get("StringValue") or attribute.get("BinaryValue") or b""
        size += len(name.encode()) + len(str(attribute.get("DataType", "")).encode())
        size += len(value.encode() if isinstance(value, str) else value)
    return size


def event_entry_size(entry: dict[str, Any]) -> int:
    """EventBridge's size of a PutEvents entry (its documented calculation)."""
    size = 14 if entry.get("Time") else 0
    for key in ("Source", "DetailType", "Detail"):
        size += len(str(entry.get(key) or "").encode())
    size += sum(len(str(resource).encode()) for resource in entry.get("Resources") or [])
    return size


def _refuse(code: str, message: str, operation: str) -> ClientError:
    error: Any = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": 400}}
    return ClientError(error, operation)


def _check_sqs(operation: str, params: dict[str, Any]) -> None:
    if operation == "SendMessage":
        sizes = [sqs_message_size(params.get("MessageBody", ""), params.get("MessageAttributes"))]
    elif operation == "SendMessageBatch":
        sizes = [
            sqs_message_size(e.get("MessageBody", ""), e.get("MessageAttributes")) for e in params["Entries"]
        ]
        if sum(sizes) > MESSAGE_LIMIT:
            message = f"Batch requests cannot be longer than {MESSAGE_LIMIT} bytes. You have sent {sum(sizes)} bytes."
            raise _refuse("AWS.SimpleQueueService.BatchRequestTooLong", message, operation)
    else:
        return
    if max(sizes, default=0) > MESSAGE_LIMIT:
        message = (
            f"One or more parameters are invalid. Reason: Message must be shorter than {MESSAGE_LIMIT} bytes."
        )
        raise _refuse("InvalidParameterValue", message, operation)


def _check_events(operation: str, params: dict[str, Any]) -> None:
    if operation != "PutEvents":
        return
    total = sum(event_entry_size(entry) for entry in params.get("Entries", []))
    if total > MESSAGE_LIMIT:
        message = (
            f"Total size of the entries in the request is over the limit ({total} > {MESSAGE_LIMIT} bytes)."
        )
        raise _refuse("ValidationException", message, operation)


def check_call(params: dict[str, Any], model: Any, **_: Any) -> None:
    """botocore `before-parameter-build` handler."""
    service = model.service_model.signing_name
    if service == "sqs":
        _check_sqs(model.name, params)
    elif service == "events":
        _check_events(model.name, params)
