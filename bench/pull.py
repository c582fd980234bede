"""Pull benchmark: 1,000 realistic messages from the local stack's real Dovecot, pulled end to end,
next to a raw poplib loop (UIDL + RETR, no parsing, no storage) in the same run.

    .venv/bin/python -m bench.pull            (or: make bench-pull)

Pulls three ways: (a) into moto server (in a process of its own); (b) into the in-memory storage
adapters (the pipeline's own cost); (c) into moto with cloud latency added to every AWS call
(20 ms per S3 write, 8 ms per DynamoDB call), once with the overlapping writes and once with one
write at a time. (a) and (c) again after a killed pull (its lease left behind: the next pull
records the first messages as attempted, services/pull.py Attempts) and with every message
recorded (the crash-loop bookkeeping as first built: two more DynamoDB writes per message). Then
the peak memory of pulling one 25 MB message, in a fresh process.
"""

from __future__ import annotations

import argparse
import json
import os
import poplib
import random
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

S3_WRITE_LATENCY = 0.020
DYNAMODB_LATENCY = 0.008
S3_WRITES = {"PutObject", "CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload"}

TEXTS = {
    "utf-8": "Grüße aus Köln, Ελληνικά, 日本語 and € prices.",
    "iso-8859-1": "Café crème, déjà vu, naïve façade.",
    "windows-1252": "Smart “quotes” and the \u2013 dash cost 5 €.",
    "koi8-r": "Привет, это письмо в кодировке KOI8-R.",
    "shift_jis": "こんにちは、請求書を添付します。",
    "iso-8859-2": "Zażółć gęślą jaźń, Příliš žluťoučký kůň.",
}


def message_mix(count: int, seed: int = 7) -> list[bytes]:
    """About 70% small plain text, 25% HTML with an inline image, 5% ~1 MB with an attachment."""
    rng = random.Random(seed)
    charsets = list(TEXTS)
    made = []
    for number in range(count):
        charset = charsets[number % len(charsets)]
        text = (TEXTS[charset] + "\n") * rng.randint(3, 30)
        message = EmailMessage()
        message["From"] = f"Sender {number} <sender{number}@example.test>"
        message["To"] = "Bench <bench@example.test>, other@example.test"
        message["Subject"] = f"{TEXTS[charset][:20]} #{number}"
        message["Message-ID"] = f"<bench-{number}@example.test>"
        message["Date"] = "Tue, 24 Nov 2026 10:00:00 +0000"
        kind = number % 20
        if kind == 0:  # 5%: a ~1 MB attachment
            message.set_content(text, charset=charset)
            message.add_attachment(
                rng.randbytes(760_000), maintype="application", subtype="pdf", filename=f"report-{number}.pdf"
            )
        elif kind <= 5:  # 25%: HTML with an inline image
            message.set_content(text, charset=charset)
            html = f'<html><body><p style="color:#333">{text}</p><img src="cid:logo{number}"></body></html>'
            message.add_alternative(html, subtype="html", charset=charset)
            html_part = message.get_payload()[1]  # type: ignore[index]
            html_part.add_related(
                rng.randbytes(rng.randint(8_000, 40_000)),
                maintype="image",
                subtype="png",
                cid=f"<logo{number}>",
            )
        else:  # 70%: small plain text
            message.set_content(text, charset=charset)
        made.append(message.as_bytes())
    return made


def big_message(size: int = 25 * 1024 * 1024) -> bytes:
    message = EmailMessage()
    message["From"] = "sender@example.test"
    message["To"] = "bench@example.test"
    message["Subject"] = "a 25 MB message"
    message.set_content("The scan is attached.")
    # base64 grows the attachment by a third and CRLF every 76 characters: this much data makes
    # a message of about `size`.
    message.add_attachment(
        os.urandom(size * 3 // 4 * 76 // 78 - 4096),
        maintype="application",
        subtype="pdf",
        filename="scan.pdf",
    )
    return message.as_bytes()


@dataclass
class Row:
    name: str
    messages: int
    megabytes: float
    seconds: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


def raw_poplib(servers: Any, address: str, password: str) -> Row:
    started = time.perf_counter()
    pop = poplib.POP3_SSL(servers.host, servers.ports.pop3s, context=servers.ssl_context(), timeout=30)
    pop.user(address)
    pop.pass_(password)
    _, lines, _ = pop.uidl()
    total = 0
    for line in lines:
        number = int(line.split()[0])
        _, body, _ = pop.retr(number)
        total += len(b"\r\n".join(body)) + 2
    pop.quit()
    return Row("raw poplib: UIDL + RETR", len(lines), total / 1e6, time.perf_counter() - started)


def latency_hooks(s3: Any, dynamodb: Any) -> None:
    """Adds the cloud's latency to each call before it is sent (the clients' own event system)."""

    def s3_latency(event_name: str = "", **_: Any) -> None:
        if event_name.rsplit(".", 1)[-1] in S3_WRITES:
            time.sleep(S3_WRITE_LATENCY)

    def dynamodb_latency(**_: Any) -> None:
        time.sleep(DYNAMODB_LATENCY)

    s3.meta.events.register("before-send.s3", s3_latency)
    dynamodb.meta.events.register("before-send.dynamodb", dynamodb_latency)


def moto_process() -> tuple[subprocess.Popen[bytes], str]:
    """moto server in a process of its own: the local stack runs it in-process, where its CPU
    would compete with the pull for the GIL and blur what the pull itself costs."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("moto server did not start")


def moto_storage(settings: Any, endpoint: str, *, latency: bool) -> Any:
    import boto3
    from botocore.config import Config
    from mailcore.adapters.dynamodb import DynamoFiles, DynamoMail, DynamoPullState
    from mailcore.adapters.s3 import S3Blobs
    from mailcore.storage import Storage

    session = boto3.session.Session()
    config = Config(max_pool_connections=20, retries={"mode": "standard", "max_attempts": 5})
    s3 = session.client("s3", endpoint_url=endpoint, config=config)
    dynamodb = session.client("dynamodb", endpoint_url=endpoint, config=config)
    if latency:
        latency_hooks(s3, dynamodb)
    blobs = S3Blobs(settings.bucket, client=s3)
    return Storage(
        mail=DynamoMail(settings.mail_table, blobs, client=dynamodb),
        files=DynamoFiles(settings.files_table, client=dynamodb),
        blobs=blobs,
        pull_state=DynamoPullState(settings.pull_state_table, client=dynamodb),
    )


@contextmanager
def one_write_at_a_time() -> Iterator[None]:
    from mailcore.services import pull

    saved = pull.MAX_IN_FLIGHT
    pull.MAX_IN_FLIGHT = 1
    try:
        yield
    finally:
        pull.MAX_IN_FLIGHT = saved


@contextmanager
def every_message_recorded() -> Iterator[None]:
    """The crash-loop bookkeeping as it was first built: every message recorded as attempted
    (two DynamoDB writes per message), not only after a death."""
    from mailcore.services import pull

    original = pull.Attempts.__init__

    def recording_all(self: Any, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **{**kwargs, "window": 10**9})

    pull.Attempts.__init__ = recording_all  # type: ignore[method-assign]
    try:
        yield
    finally:
        pull.Attempts.__init__ = original  # type: ignore[method-assign]


def after_a_death(target: Any, storage: Any) -> Any:
    """The account as a killed pull leaves it: its lease never given back, run out."""
    assert storage.pull_state.acquire_lease(target.team, target.name, "killed pull", 1)
    time.sleep(2.1)
    return target


def timed_pull(name: str, target: Any, storage: Any, megabytes: float) -> Row:
    from mailcore.protocols.transcript import Transcript
    from mailcore.services.pull import pull_account

    from tests.fakes import MemoryPublisher
    from tests.stack import stack_tls_context

    started = time.perf_counter()
    report = pull_account(
        target,
        storage=storage,
        transcript=Transcript(),
        tls_context=stack_tls_context(),
        events=MemoryPublisher(),
    )
    seconds = time.perf_counter() - started
    if report.error or report.fetched + report.skipped == 0:
        raise SystemExit(f"{name}: the pull failed: {report.error}")
    return Row(name, report.fetched, megabytes, seconds)


def fresh_target(stack: Any, mailbox: Any) -> Any:
    """The bench mailbox under a new team name: every message is new to it (mail ids derive
    from the team), while the mailbox stays as it is (leave_on_server)."""
    from mailcore.models import MailAccount
    from mailcore.teams import ResolvedAccount

    account = MailAccount.model_validate(stack.account_config(mailbox, leave_on_server=True))
    return ResolvedAccount(f"bench-{secrets.token_hex(4)}", "main", account)


def _peak_rss_mb() -> float:
    """The process's resident high-water mark (VmHWM; unlike ru_maxrss, not inherited at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def measure_memory(arguments: dict[str, Any]) -> dict[str, float]:
    """In a fresh process: tracemalloc peak of pulling the one big message into moto, next to
    poplib's retr() + join of the same message."""
    os.environ.update(arguments["environment"])
    from mailcore.models import MailAccount
    from mailcore.protocols.transcript import Transcript
    from mailcore.services.pull import pull_account
    from mailcore.teams import ResolvedAccount

    from tests.stack import stack_storage, stack_tls_context

    account = MailAccount.model_validate(arguments["account"])
    stack_storage()  # clients made before measuring
    rss_before = _peak_rss_mb()
    pop3 = account.pop3
    tracemalloc.start()
    pop = poplib.POP3_SSL(pop3.host, pop3.port, context=stack_tls_context(), timeout=60)
    pop.user(account.mail_username)
    pop.pass_(account.mail_password.get_secret_value())
    _, lines, _ = pop.retr(1)
    joined = b"\r\n".join(lines)
    size = len(joined)
    del lines, joined
    pop.quit()
    baseline_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    report = pull_account(
        ResolvedAccount(f"bench-{secrets.token_hex(4)}", "main", account),
        storage=stack_storage(),
        transcript=Transcript(),
        tls_context=stack_tls_context(),
    )
    pull_peak = tracemalloc.get_traced_memory()[1] - before
    if report.fetched != 1:
        raise SystemExit(f"the big message was not pulled: {report}")
    return {
        "size_mb": size / 1e6,
        "retr_join_peak_mb": baseline_peak / 1e6,
        "pull_peak_mb": pull_peak / 1e6,
        "rss_before_mb": rss_before,
        "rss_peak_mb": _peak_rss_mb(),
    }


def print_table(rows: list[Row], baseline: Row) -> None:
    print(f"\n{'run':<58}{'msg/s':>9}{'MB/s':>8}{'vs raw':>8}")
    for row in rows:
        print(
            f"{row.name:<58}{row.rate:>9.0f}{row.megabytes / row.seconds:>8.1f}{row.rate / baseline.rate:>8.2f}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--measure-memory", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_memory:
        print(json.dumps(measure_memory(json.loads(Path(args.measure_memory).read_text()))))
        return 0

    from mailcore.settings import Settings, read

    from local.aws import create_resources
    from local.maildir import deliver_files
    from local.mailservers import Mailbox
    from local.stack import LocalStack, StackPorts
    from tests.fakes import memory_storage

    root = Path(tempfile.mkdtemp(prefix="bench-pull-", dir="/tmp"))
    root.chmod(0o755)
    stack = LocalStack(root, ports=StackPorts.free(), run_schedules=False)
    try:
        stack.start()
        servers = stack.mail_servers
        assert servers is not None
        bench, big = (Mailbox(f"{name}@example.test", secrets.token_urlsafe(12)) for name in ("bench", "big"))
        servers.add_mailboxes([bench, big])
        mix = message_mix(args.messages)
        megabytes = sum(len(raw) for raw in mix) / 1e6
        deliver_files(servers, bench.address, mix)
        print(f"mailbox: {len(mix)} messages, {megabytes:.1f} MB (CRLF as served: a little more)")

        raw_poplib(servers, bench.address, bench.password)  # warm Dovecot's index and cache
        baseline = raw_poplib(servers, bench.address, bench.password)
        rows = [baseline]
        moto, endpoint = moto_process()
        try:
            # moto's CloudFormation names the resources in this server its own way.
            created = create_resources(stack.template, stack.session, endpoint)
            settings = read(Settings).model_copy(
                update={
                    "mail_table": created["MailTable"],
                    "files_table": created["FilesTable"],
                    "pull_state_table": created["PullStateTable"],
                    "bucket": created["MailBucket"],
                }
            )
            plain, slow = (
                moto_storage(settings, endpoint, latency=False),
                moto_storage(settings, endpoint, latency=True),
            )
            for name, storage in (
                ("(a) pull into moto server", plain),
                ("(b) pull into in-memory storage", memory_storage()),
                ("(c) moto + cloud latency, writes overlapped", slow),
            ):
                rows.append(timed_pull(name, fresh_target(stack, bench), storage, megabytes))
            for name, storage in (("(a) after a killed pull", plain), ("(c) after a killed pull", slow)):
                target = after_a_death(fresh_target(stack, bench), storage)
                rows.append(timed_pull(name, target, storage, megabytes))
            with every_message_recorded():
                for name, storage in (
                    ("(a) every message recorded", plain),
                    ("(c) every message recorded", slow),
                ):
                    rows.append(timed_pull(name, fresh_target(stack, bench), storage, megabytes))
            with one_write_at_a_time():
                name = "(c') moto + cloud latency, one write at a time"
                rows.append(timed_pull(name, fresh_target(stack, bench), slow, megabytes))
        finally:
            moto.terminate()
            moto.wait(10)
        print_table(rows, baseline)

        deliver_files(servers, big.address, [big_message()])
        arguments = {
            "environment": {**stack.info["environment"], "AWS_ENDPOINT_URL": stack.info["aws_endpoint"]},
            "account": stack.account_config(big, leave_on_server=True),
        }
        spec = root / "memory.json"
        spec.write_text(json.dumps(arguments))
        spec.chmod(0o600)
        measured = subprocess.run(
            [sys.executable, "-m", "bench.pull", "--measure-memory", str(spec)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, **arguments["environment"]},
        )
        memory = json.loads(measured.stdout.strip().splitlines()[-1])
        print(
            f"\none {memory['size_mb']:.1f} MB message: pull peak {memory['pull_peak_mb']:.0f} MB traced "
            f"({memory['pull_peak_mb'] / memory['size_mb']:.1f}x the message), poplib retr()+join alone "
            f"{memory['retr_join_peak_mb']:.0f} MB ({memory['retr_join_peak_mb'] / memory['size_mb']:.1f}x); "
            f"process peak RSS {memory['rss_peak_mb']:.0f} MB (before the pull {memory['rss_before_mb']:.0f} MB; "
            "tracemalloc's own bookkeeping included)"
        )
    finally:
        stack.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
