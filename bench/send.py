"""Send benchmark: 500 queued mails of one account sent through the outbox's sync path, against
the local Postfix, next to a raw smtplib loop sending the same 500 messages over one STARTTLS
connection in the same run; once into moto as is, once with the cloud's latency added to every
AWS call (a botocore before-send hook sleeping per call). Then, in each run, 50 direct sends
(DirectSend: compose, store, send over a new connection, write the outcome) next to a raw
smtplib loop opening a new STARTTLS connection per message, as a direct send does.

    .venv/bin/python -m bench.send [--mails 500] [--direct 50]      (or: make bench-send)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Added to every call of that kind while the latency run measures (seconds).
CLOUD_LATENCY = {
    "dynamodb": 0.008,
    "events.PutEvents": 0.010,
    "s3.PutObject": 0.020,
    "s3.GetObject": 0.015,  # not given by the issue; S3 reads in-region take 10-20 ms
}


def latency_hook(enabled: Callable[[], bool]) -> Callable[..., None]:
    def sleep(event_name: str, **_: Any) -> None:
        if not enabled():
            return
        # event_name: before-send.<service>.<Operation>
        _, service, operation = event_name.split(".", 2)
        delay = CLOUD_LATENCY.get(f"{service}.{operation}", CLOUD_LATENCY.get(service, 0.0))
        if delay:
            time.sleep(delay)

    return sleep


class MotoProcess:
    """moto in its own process, as AWS is not inside the function's process: in-process moto
    would compete with the sender for the GIL and the figures would measure moto's CPU."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        moto = Path(sys.executable).with_name("moto_server")
        self.process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2):
                return
            time.sleep(0.1)
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_moto_process(port: int = 0, **_: Any) -> tuple[MotoProcess, str]:
    moto = MotoProcess()
    return moto, f"http://127.0.0.1:{moto.port}"


def memory_storage_with_latency(enabled: Callable[[], bool]) -> Any:
    """The in-memory storage, sleeping per call like the cloud: shows what the outbox does when
    AWS costs latency but no CPU (moto's own CPU bounds the runs into moto on this machine)."""
    from tests.fakes import MemoryBlobs, MemoryMail, memory_storage

    def pause(seconds: float) -> None:
        if enabled():
            time.sleep(seconds)

    class SlowMail(MemoryMail):
        def transition(self, *args: Any, **kwargs: Any) -> Any:
            pause(CLOUD_LATENCY["dynamodb"])
            return super().transition(*args, **kwargs)

    class SlowBlobs(MemoryBlobs):
        def get(self, key: str) -> bytes:
            pause(CLOUD_LATENCY["s3.GetObject"])
            return super().get(key)

    storage = memory_storage()
    storage.mail, storage.blobs = SlowMail(), SlowBlobs()
    return storage


def direct_sends(storage: Any, target: Any, address: str, count: int, events: Any) -> list[str]:
    """Sends `count` mails with DirectSend (no limiter: the account's minute would stop it);
    answers the keys of the raw messages stored, for the baseline to send."""
    from mailcore.models import SendRequest
    from mailcore.protocols.transcript import Transcript
    from mailcore.services.send import DirectSend

    from tests.stack import stack_tls_context

    direct = DirectSend(storage=storage, tls_context=stack_tls_context(), events=events)
    keys = []
    for number in range(count):
        request = SendRequest(to=[address], subject=f"direct {number}", body_text="x" * 2000)
        mail = direct.send(target, request, transcript=Transcript(), time_left=60.0)
        assert mail.raw_key is not None
        keys.append(mail.raw_key)
    return keys


def smtplib_per_connection(servers: Any, mailbox: Any, raws: list[bytes]) -> None:
    """The baseline of a direct send: a new STARTTLS connection and login per message."""
    for raw in raws:
        with smtplib.SMTP(servers.host, servers.ports.smtp, local_hostname="example.test") as smtp:
            smtp.starttls(context=servers.ssl_context())
            smtp.login(mailbox.address, mailbox.password)
            smtp.sendmail(mailbox.address, [mailbox.address], raw)


class SlowEvents:
    def __init__(self, enabled: Callable[[], bool]) -> None:
        from tests.fakes import MemoryPublisher

        self.inner, self.enabled = MemoryPublisher(), enabled

    def publish(self, events: list[Any]) -> None:
        if self.enabled():
            time.sleep(CLOUD_LATENCY["events.PutEvents"])
        self.inner.publish(events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mails", type=int, default=500)
    parser.add_argument("--direct", type=int, default=50)
    args = parser.parse_args(argv)

    import local.stack
    from local.mailservers import Mailbox
    from local.stack import LocalStack, StackPorts

    local.stack.start_moto_server = start_moto_process  # type: ignore[assignment]

    root = Path(tempfile.mkdtemp(prefix="bench-send-", dir="/tmp"))
    root.chmod(0o755)
    stack = LocalStack(root, ports=StackPorts.free(), run_schedules=False)
    try:
        stack.start()
        assert stack.mail_servers is not None
        # The local stream driver would push the queued mails before the sync under measure.
        if stack.event_sources is not None:
            stack.event_sources.stop()
        from mailcore import wiring
        from mailcore.adapters.base import aws_client
        from mailcore.models import SendRequest
        from mailcore.services.outbox import Outbox, queue_mail
        from mailcore.wiring import outbox as outbox_wiring

        from tests.fakes import MemoryDeadLetters
        from tests.stack import stack_directory, stack_storage, stack_tls_context

        latency_on = {"value": False}
        hook = latency_hook(lambda: latency_on["value"])
        for service in ("dynamodb", "s3", "events"):
            aws_client(service).meta.events.register(f"before-send.{service}", hook)

        print(f"send benchmark: {args.mails} mails of one account, local Postfix (STARTTLS), moto")
        print(f"{'storage':<38} {'outbox sync':>12} {'raw smtplib':>12} {'ratio':>7}")
        runs = (
            ("moto as is", False, False),
            ("moto + cloud latency (8/10/20/15 ms)", True, False),
            ("in memory, no AWS", False, True),
            ("in memory + cloud latency", True, True),
        )
        for label, with_latency, in_memory in runs:
            mailbox = Mailbox(f"bench{secrets.token_hex(3)}@example.test", secrets.token_urlsafe(12))
            stack.mail_servers.add_mailboxes([mailbox])
            team = f"bench-{secrets.token_hex(3)}"
            stack.put_team_secret(team, {"type": "mail", "accounts": {"main": stack.account_config(mailbox)}})
            wiring.reset()
            for service in ("dynamodb", "s3", "events"):
                aws_client(service).meta.events.register(f"before-send.{service}", hook)
            target = stack_directory().accounts_of([team])[0]
            storage = (
                memory_storage_with_latency(lambda: latency_on["value"]) if in_memory else stack_storage()
            )
            raws = []
            for number in range(args.mails):
                request = SendRequest(to=[mailbox.address], subject=f"bench {number}", body_text="x" * 2000)
                mail = queue_mail(target, request, storage=storage)
                assert mail.raw_key is not None
                raws.append(storage.blobs.get(mail.raw_key))

            latency_on["value"] = with_latency
            started = time.perf_counter()
            storage.mail.outbox(target.team, target.name)
            query_seconds = time.perf_counter() - started
            started = time.perf_counter()
            if hasattr(storage.mail, "outbox_ids"):  # what the sync reads (ids only)
                storage.mail.outbox_ids(target.team, target.name)
            ids_seconds = time.perf_counter() - started
            started = time.perf_counter()
            outbox = outbox_wiring.root().outbox()
            if in_memory:
                outbox = Outbox(
                    storage=storage,
                    directory=None,
                    events=SlowEvents(lambda: latency_on["value"]),
                    dead_letters=MemoryDeadLetters(),
                    tls_context=stack_tls_context(),
                )
            with outbox:
                report = outbox.sync(target)
            outbox_seconds = time.perf_counter() - started
            latency_on["value"] = False
            assert len(report.sent) == args.mails, f"sent {len(report.sent)} of {args.mails}"

            servers = stack.mail_servers
            started = time.perf_counter()
            with smtplib.SMTP(servers.host, servers.ports.smtp, local_hostname="example.test") as smtp:
                smtp.starttls(context=servers.ssl_context())
                smtp.login(mailbox.address, mailbox.password)
                for raw in raws:
                    smtp.sendmail(mailbox.address, [mailbox.address], raw)
            raw_seconds = time.perf_counter() - started

            outbox_rate, raw_rate = args.mails / outbox_seconds, args.mails / raw_seconds
            print(
                f"{label:<38} {outbox_rate:>8.0f} msg/s {raw_rate:>8.0f} msg/s {outbox_rate / raw_rate:>6.2f}x"
            )
            print(
                f"{'':<38} (the Outbox index query alone: whole items {query_seconds:.2f} s,"
                f" ids only {ids_seconds:.2f} s; the sync {outbox_seconds:.2f} s)"
            )

            latency_on["value"] = with_latency
            started = time.perf_counter()
            keys = direct_sends(
                storage, target, mailbox.address, args.direct, SlowEvents(lambda: latency_on["value"])
            )
            direct_seconds = time.perf_counter() - started
            latency_on["value"] = False
            direct_raws = [storage.blobs.get(key) for key in keys]
            started = time.perf_counter()
            smtplib_per_connection(servers, mailbox, direct_raws)
            per_connection_seconds = time.perf_counter() - started
            direct_rate, per_connection_rate = (
                args.direct / direct_seconds,
                args.direct / per_connection_seconds,
            )
            print(
                f"{'  direct send vs smtplib per connection':<38} {direct_rate:>8.0f} msg/s"
                f" {per_connection_rate:>8.0f} msg/s {direct_rate / per_connection_rate:>6.2f}x"
            )
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)
        os.environ.pop("AWS_ENDPOINT_URL", None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
