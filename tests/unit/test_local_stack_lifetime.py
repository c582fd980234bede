"""The integration suite's local stack ends with its package: its drivers poll moto's queues and
streams, and the unit tests reset moto's process-wide state (mock_aws) under them, which filled
every CI log with "NonExistentQueue" errors of drivers still polling. And the process it leaves
behind is the process's own again: unit tests had talked to its moto server instead of mock_aws."""

from __future__ import annotations

import os
import threading

# What a running LocalStack polls with (local/event_sources.py, local/stack.py schedules).
DRIVER_THREADS = ("sqs-", "stream-", "rule-", "schedule-")


def test_no_local_stack_drives_its_event_sources_while_the_unit_tests_run():
    drivers = [thread.name for thread in threading.enumerate() if thread.name.startswith(DRIVER_THREADS)]

    assert drivers == []


def test_no_stopped_local_stack_leaves_the_process_pointing_at_its_endpoint():
    assert os.environ.get("AWS_ENDPOINT_URL") is None
