"""Tiny handlers for the local gateway's unit tests (see tests/unit/data/template-sample.yaml)."""

import base64
import json
import os
import time

INVOCATIONS = 0  # per execution environment (module copy)


def lambda_handler(event, context):
    global INVOCATIONS
    INVOCATIONS += 1
    query = (event or {}).get("queryStringParameters") or {}
    if "sleep" in query:
        time.sleep(float(query["sleep"]))
    if "hold" in query:  # megabytes, for a moment
        held = b"x" * int(query["hold"]) * 2**20
        time.sleep(0.5)
        del held
    body = {
        "event": event,
        "context": {
            "function_name": context.function_name,
            "function_version": context.function_version,
            "invoked_function_arn": context.invoked_function_arn,
            "memory_limit_in_mb": context.memory_limit_in_mb,
            "aws_request_id": context.aws_request_id,
            "log_group_name": context.log_group_name,
            "remaining_ms": context.get_remaining_time_in_millis(),
        },
        "env": {name: os.environ.get(name) for name in ("TABLE", "ECHO_NAME", "AWS_LAMBDA_FUNCTION_NAME")},
        "module": __name__,
        "invocations": INVOCATIONS,
    }
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/json", "X-Echo": "yes"},
        "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
        "body": json.dumps(body),
        "isBase64Encoded": False,
    }


def boom(event, context):
    if (event or {}).get("path") == "/api/malformed":
        return {"statusCode": 200, "body": {"not": "a string"}}
    raise RuntimeError("boom")


def slow(event, context):
    time.sleep(1.6)
    return {"statusCode": 200, "body": "late"}


def binary(event, context):
    return {
        "statusCode": 200,
        "headers": {"Content-Type": "application/octet-stream"},
        "body": base64.b64encode(b"\x00\xffbin").decode(),
        "isBase64Encoded": True,
    }


def hoard(event, context):
    """Holds `megabytes` of memory (in a child process with `child`) for a moment, then answers."""
    import subprocess
    import sys

    megabytes = int(event.get("megabytes", 0))
    if event.get("child"):
        code = f"import time; held = b'x' * {megabytes} * 2**20; time.sleep(2)"
        subprocess.run([sys.executable, "-c", code], check=False)
    else:
        held = b"x" * megabytes * 2**20
        time.sleep(0.5)
        del held
    return {"held": megabytes, "pid": os.getpid(), "memory_limit_in_mb": context.memory_limit_in_mb}
