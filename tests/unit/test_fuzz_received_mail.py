"""Fuzzing the preparation of received mail (parse, files, item) with hypothesis: mail built from
small hostile pieces repeated up to a few hundred KB. It fails on any exception, on more time or
memory than the bound below, and on an item over DynamoDB's limit.

`make test` runs a short fixed-seed run; `make fuzz` a longer one (FUZZ_EXAMPLES, FUZZ_SEED).
Inputs it found are kept as @example regression cases.
"""

from __future__ import annotations

import gc
import os
import time
import tracemalloc

from hypothesis import HealthCheck, example, given, seed, settings
from hypothesis import strategies as st
from mailcore.adapters.dynamodb import DynamoMail
from mailcore.services.pull import prepare_incoming

from bench.item_size import DYNAMODB_ITEM_LIMIT, item_size
from tests.fakes import MemoryBlobs
from tests.unit.test_pull_pipeline import TARGET

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "20"))
SEED = int(os.environ.get("FUZZ_SEED", "9"))
MAX_BYTES = 400_000
# Far below the per-message budget (5 s + 0.5 s/MB, 256 MiB), so that a superlinear shape shows at
# these sizes already: an ordinary mail of 400 KB is prepared in ~20 ms, tag-dense HTML at ~3 us a
# byte. CPU time of this thread, not wall time (the machine is shared) nor the process's (the
# local stack's threads run in this process when the integration tests ran first).
MAX_SECONDS = 0.5
MAX_SECONDS_PER_BYTE = 10e-6
MAX_PEAK = 64 * 1024 * 1024

HEADER_TOKENS = [
    '"', "\\", "(", ")", "<", ">", ",", ";", ":", "@", "[", "]", " ", "\r\n ", "a", "é", "=?", "?=",
    "=?utf-8?q?a?=", "=?utf-8?b?YQ==?=", "=?x-unknown?q?a?=", "<a@b.c>", "a@b.c", "\t", "*0*=", "'",
]  # fmt: skip
HEADERS = [
    "From", "To", "Cc", "Reply-To", "Subject", "References", "Message-ID", "In-Reply-To", "Date",
    "Content-Type", "Content-Disposition", "Content-Transfer-Encoding", "Content-ID",
]  # fmt: skip
HTML_TOKENS = [
    "<div>", "</div>", "<b>", "</b>", "<i>", "<a href=http://x>", "</a>", "<table>", "<tr>", "<td>",
    "<p>", "</p>", "<!--", "-->", "<![", "<svg>", "<math>", "<select>", "<li>", "<ul>", "<font>",
    "<blockquote>", "<pre>", "&amp;", "&#", "x", " ", "\n", "<br>", "<img alt=", ">", "<", "<option>",
    "<template>", "<form>", "<h1>", "<span>", "</span>", "<frameset>", "<noscript>", "<plaintext>",
]  # fmt: skip


def repeated(tokens: list[str], limit: int) -> st.SearchStrategy[str]:
    motif = st.lists(st.sampled_from(tokens), min_size=1, max_size=8).map("".join)
    return st.builds(lambda text, times: text * min(times, limit // len(text)), motif, st.integers(1, 50_000))


headers = st.lists(st.tuples(st.sampled_from(HEADERS), repeated(HEADER_TOKENS, 100_000)), max_size=4)
html_body = repeated(HTML_TOKENS, MAX_BYTES // 2).map(lambda html: ("text/html; charset=utf-8", html))
text_body = st.text(max_size=200).map(lambda text: ("text/plain; charset=utf-8", text))


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    lines = [f"{name}: {value}" for name, value in draw(headers)]
    content_type, body = draw(st.one_of(html_body, text_body))
    parts = draw(st.integers(0, 3000))
    if parts:
        part = f"--b\r\nContent-Type: {content_type}\r\n\r\n{body[: MAX_BYTES // parts]}\r\n"
        lines.append("Content-Type: multipart/mixed; boundary=b")
        body = part * parts + "--b--"
    else:
        lines.append(f"Content-Type: {content_type}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode("utf-8", "surrogatepass")[: MAX_BYTES * 2]


@seed(SEED)
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(messages())
@example(b"To: " + b'"' * 100_000 + b"\r\n\r\nx")
def test_any_received_mail_is_prepared_within_bounded_time_and_memory_into_an_item_under_the_limit(raw):
    # Without the collector: a full collection walks the whole heap of this process (the local
    # stack's, when the integration tests ran first), not the parser's; in Lambda the parser runs
    # in a child process of its own.
    gc.disable()
    try:
        started = time.thread_time()
        incoming = prepare_incoming(TARGET, "fuzz", raw)
        seconds = time.thread_time() - started
    finally:
        gc.enable()
    tracemalloc.start()
    try:
        prepare_incoming(TARGET, "fuzz", raw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

    assert seconds < MAX_SECONDS + MAX_SECONDS_PER_BYTE * len(raw), f"{seconds:.2f} s for {len(raw)} bytes"
    assert peak < MAX_PEAK, f"{peak / 2**20:.0f} MiB for {len(raw)} bytes"
    assert item_size(DynamoMail("mail", blobs=MemoryBlobs())._item(incoming.mail)) < DYNAMODB_ITEM_LIMIT  # type: ignore[arg-type]
