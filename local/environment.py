"""The process environment of code that talks to the local stack's moto instead of AWS."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any


def use_local_aws(
    region: str, endpoint: str | None = None, environment: Mapping[str, Any] | None = None
) -> None:
    """Points boto3 (and Powertools) at moto: fake credentials unless set, no profile (a real
    one must never be picked up by accident), the functions' environment, the endpoint."""
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
    }.items():
        os.environ.setdefault(key, value)
    os.environ.pop("AWS_PROFILE", None)
    os.environ.update({str(key): str(value) for key, value in (environment or {}).items()})
    if endpoint:
        os.environ["AWS_ENDPOINT_URL"] = endpoint
