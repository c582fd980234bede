"""Invokes one function of the template once, like `sam local invoke`, against the running stack.

    python -m local.invoke FUNCTION EVENT_FILE [--template template.yaml] [--stack-json .local/stack.json]

The running local stack writes .local/stack.json; from it come the moto endpoint ("aws_endpoint",
set as AWS_ENDPOINT_URL) and the functions' resolved environment ("environment"). The handler runs
in a worker process bounded by the function's MemorySize, as `make run` runs it, called with the event (a JSON file, "-" for stdin) and a Lambda
context, and its result printed as JSON. Exit status 0, or 1 when the function failed (the error is
printed as Lambda reports it: errorMessage, errorType, stackTrace).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from local.environment import use_local_aws
from local.gateway import FunctionRuntime, HandlerError, InvocationError
from local.iam import Principal
from local.template import Template, TemplateError

ROOT = Path(__file__).resolve().parent.parent


def _read_event(source: str) -> Any:
    text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    return json.loads(text) if text.strip() else {}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.invoke", description=__doc__.split("\n\n")[0])
    parser.add_argument("function", help="logical id of the function in the template, e.g. SendFunction")
    parser.add_argument("event", help="JSON file with the event ('-' reads stdin)")
    parser.add_argument("--template", type=Path, default=ROOT / "template.yaml")
    parser.add_argument("--stack-json", type=Path, default=ROOT / ".local" / "stack.json")
    args = parser.parse_args(argv)

    if not args.stack_json.exists():
        print(f"{args.stack_json} not found: start the local stack first", file=sys.stderr)
        return 2
    stack = json.loads(args.stack_json.read_text(encoding="utf-8"))
    region = str(stack.get("region") or os.environ.get("AWS_REGION") or "us-east-1")
    try:
        template = Template.load(args.template, region=region, endpoint_url=stack.get("aws_endpoint"))
        if args.function not in template.resources_of_type("AWS::Serverless::Function"):
            functions = ", ".join(template.resources_of_type("AWS::Serverless::Function"))
            print(f"no function {args.function} in {args.template} (there are: {functions})", file=sys.stderr)
            return 2
        spec = template.function(args.function, resolve_environment=False)
    except TemplateError as error:
        print(f"{args.template}: {error}", file=sys.stderr)
        return 2
    event = _read_event(args.event)

    use_local_aws(region, str(stack.get("aws_endpoint") or "") or None, stack.get("environment"))

    role = stack.get("roles", {}).get(args.function)
    principal = Principal(**{**role, "policies": tuple(role["policies"])}) if role else None
    runtime = FunctionRuntime(
        spec, region=region, account_id=template.account_id, role=principal, isolation="process"
    )
    try:
        result = runtime.invoke(event)
    except HandlerError as failure:
        raised = failure.error
        report = {
            "errorMessage": str(raised),
            "errorType": failure.error_type,
            # The frames as the worker process formatted them (the traceback stays over there).
            "stackTrace": failure.formatted.splitlines()[1:-1],
        }
        print(json.dumps(report, indent=2))
        print(failure.formatted, file=sys.stderr, end="")
        return 1
    except InvocationError as failure:
        print(json.dumps({"errorMessage": str(failure), "errorType": failure.error_type}, indent=2))
        return 1
    finally:
        runtime.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
