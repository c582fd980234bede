"""The integration suite's local stack ends with its package: its drivers poll moto's queues and
streams, and the unit tests reset moto's process-wide state (mock_aws) under them, which filled
every CI log with "NonExistentQueue" errors of drivers still polling."""

from __future__ import annotations

import threading

# What a running LocalStack polls with (local/event_sources.py, local/stack.py schedules).
DRIVER_THREADS = ("sqs-", "stream-", "rule-", "schedule-")


def test_no_local_stack_drives_its_event_sources_while_the_unit_tests_run():
    drivers = [thread.name for thread in threading.enumerate() if thread.name.startswith(DRIVER_THREADS)]

    assert drivers == []
