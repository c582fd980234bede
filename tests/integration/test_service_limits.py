"""An asynchronous invocation's event holds 256 KB (a synchronous one 6 MB), as in Lambda."""

from __future__ import annotations

import pytest

from local.gateway import ASYNC_EVENT_LIMIT, RequestTooLarge


def test_an_asynchronous_event_over_256_kb_is_refused_before_the_function_runs(stack):
    event = {
        "template": "no-such-template",
        "to": ["x@example.test"],
        "variables": {"pad": "x" * ASYNC_EVENT_LIMIT},
    }
    with pytest.raises(RequestTooLarge):
        stack.invoke("SystemMailFunction", event, asynchronous=True)
    assert stack.invoke("SystemMailFunction", event)["status"] == "invalid"  # synchronously it runs
