"""The web console in a real browser: Debian's Chromium driven by Playwright, against the local
stack (gateway, moto's Cognito, real Dovecot and Postfix). `make screenshots` keeps the
screenshots this test takes in docs/console/ (otherwise they go to a temporary folder)."""

import json
import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from local.aws import cognito_user
from local.mailservers import Mailbox
from tests.integration.conftest import TeamAccount, wait_for_messages
from tests.support import wait_until

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DOCS = Path(__file__).resolve().parents[2] / "docs" / "console"
ATTACHMENT = b"id,amount\n1,42.00\n2,17.50\n"


@dataclass(frozen=True)
class ConsoleUser:
    team: TeamAccount
    email: str
    password: str


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def screenshots(tmp_path: Path) -> Path:
    if os.environ.get("UPDATE_SCREENSHOTS"):
        DOCS.mkdir(parents=True, exist_ok=True)
        return DOCS
    return tmp_path


@pytest.fixture
def admin(stack, new_team) -> ConsoleUser:
    """A fresh team and a Cognito user who administers it (groups <team> and <team>-admin)."""
    team = new_team()
    email = f"admin-{team.team}@example.test"
    password = "Console-" + uuid.uuid4().hex[:12] + "1!"
    pool_id, client_id = stack.user_pool()
    cognito_user(
        stack.session,
        stack.info["aws_endpoint"],
        pool_id,
        client_id,
        email=email,
        password=password,
        groups=[team.team, team.team + "-admin"],
    )
    return ConsoleUser(team, email, password)


@pytest.fixture
def page(browser, stack) -> Iterator[Any]:
    """A page that records dialogs and refuses (and records) every request to another origin."""
    context = browser.new_context(viewport={"width": 1280, "height": 860}, accept_downloads=True)
    page = context.new_page()
    page.dialogs = []
    page.foreign_requests = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    # Shown when a test fails: what the console said and what broke in it.
    page.on("console", lambda message: print(f"browser console: {message.text}"))
    page.on("pageerror", lambda error: print(f"browser error: {error}"))
    allowed = {urlsplit(stack.info["api_url"]).netloc, urlsplit(stack.info["aws_endpoint"]).netloc}

    page.let_through = set()  # recorded, but not refused (a test's own recording server)

    def guard(route: Any) -> None:
        netloc = urlsplit(route.request.url).netloc
        if netloc in allowed:
            route.continue_()
            return
        page.foreign_requests.append(route.request.url)
        if netloc in page.let_through:
            route.continue_()
        else:
            route.abort()

    context.route("**/*", guard)
    yield page
    context.close()


def sign_in(page, stack, user: ConsoleUser) -> None:
    page.goto(stack.info["api_url"] + "/console")
    page.fill("#sign-in input[name=email]", user.email)
    page.fill("#sign-in input[name=password]", user.password)
    page.click("#sign-in button[type=submit]")
    page.wait_for_selector(f"tr[data-account='{user.team.account}'], #sign-in-error:not(:empty)")
    refused = page.query_selector("#sign-in-error")
    assert refused is None, f"sign-in refused: {refused.inner_text()}"


def fill_account_form(page, stack, mailbox: Mailbox, password: str) -> None:
    servers = stack.mail_servers
    values = {
        "account": "second",
        "mail_from": mailbox.address,
        "mail_username": mailbox.address,
        "mail_password": password,
        "smtp.host": servers.host,
        "smtp.port": str(servers.ports.smtp),
        "pop3.host": servers.host,
        "pop3.port": str(servers.ports.pop3s),
    }
    for name, value in values.items():
        page.fill(f"#account-form [name='{name}']", value)
    page.select_option("#account-form [name='smtp.security']", "starttls")
    page.select_option("#account-form [name='pop3.security']", "ssl")
    page.uncheck("#account-form [name=leave_on_server]")


def test_an_administrator_adds_an_account_sends_pulls_and_downloads_an_attachment(
    stack, admin, page, screenshots
):
    mailbox = next(stack.mailbox_pool)
    sign_in(page, stack, admin)
    page.screenshot(path=str(screenshots / "accounts.png"))

    page.click("#add-account")
    fill_account_form(page, stack, mailbox, "not-the-password")
    page.click("#save-account")
    refusal = page.wait_for_selector("[data-error-for=mail_password]", timeout=60_000)
    assert "login failed" in refusal.inner_text()
    page.screenshot(path=str(screenshots / "check-refused.png"))

    page.fill("#account-form [name=mail_password]", mailbox.password)
    page.click("#save-account")
    page.wait_for_selector("[data-test=saved]", timeout=60_000)

    page.goto(stack.info["api_url"] + "/console#/compose")
    page.select_option(
        "#compose [name=from]", value=json.dumps([admin.team.team, "second"], separators=(",", ":"))
    )
    page.fill("#compose [name=to]", mailbox.address)
    page.fill("#compose [name=subject]", "Invoices of the month")
    page.fill("#compose [name=body_text]", "The invoices are attached.")
    attachment = {"name": "invoices.csv", "mimeType": "text/csv", "buffer": ATTACHMENT}
    page.set_input_files("#compose input[type=file]", files=[attachment])
    page.screenshot(path=str(screenshots / "compose.png"))
    page.click("#send")
    page.wait_for_selector("[data-test=sent]", timeout=60_000)
    assert page.eval_on_selector("#uploads progress", "bar => bar.value") == 1
    wait_for_messages(stack, mailbox.address, 1)

    page.goto(stack.info["api_url"] + "/console#/accounts")
    page.click("tr[data-account=second] >> text=Pull now")
    report = page.wait_for_selector("[data-test=pull-report]", timeout=60_000)
    assert "fetched 1" in report.inner_text()

    page.goto(stack.info["api_url"] + "/console#/mail")
    page.select_option("#filters [name=direction]", "in")
    page.click("#filters button[type=submit]")
    page.click("#mail-list tbody tr >> text=Invoices of the month")
    link = page.wait_for_selector("#attachments a")
    page.screenshot(path=str(screenshots / "mail.png"))
    with page.expect_download() as download:
        link.click()
    assert Path(download.value.path()).read_bytes().replace(b"\r\n", b"\n") == ATTACHMENT
    assert page.dialogs == [] and page.foreign_requests == []


# "Remote" is a recording server on loopback (nothing may leave this machine): what it is asked
# for is what the mail made the browser fetch, whatever the browser's own routing saw.
XSS_HTML = """
<p id="visible">Quarterly figures</p>
<script>alert("script"); parent.document.title = "pwned"; fetch("http://{remote}/script");</script>
<img src="x" onerror="alert('onerror')">
<svg onload="alert('svg')"><circle r="5"/></svg>
<body onload="alert('body')">
<iframe src="javascript:alert('iframe')"></iframe>
<iframe srcdoc="<script>alert('nested')</script>"></iframe>
<object data="http://{remote}/object"></object>
<embed src="http://{remote}/embed">
<a id="js-link" href="javascript:alert('link')">click</a>
<form action="http://{remote}/form"><input name="q" autofocus onfocus="alert('focus')"></form>
<link rel="stylesheet" href="http://{remote}/style.css">
<style>@import url("http://{remote}/import.css"); p { background: url("http://{remote}/bg.png"); }</style>
<div style="background-image: url('http://{remote}/inline.png')">styled</div>
<img id="tracker" src="http://{remote}/tracker.png" width="1" height="1">
<meta http-equiv="refresh" content="0; url=http://{remote}/refresh">
<details open ontoggle="alert('toggle')"><summary>x</summary></details>
<math><mtext><table><mglyph><style><img src=x onerror="alert('mxss')"></style></mglyph></table></mtext></math>
"""


class _Recorder(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def remote() -> Iterator[Any]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def store_mail(team: TeamAccount, **fields: Any) -> str:
    """Puts a mail straight into the stack's storage (past the pipeline) and answers its id."""
    from mailcore.ids import new_id
    from mailcore.models import Mail

    from tests.stack import stack_storage

    mail = Mail(id=new_id(), team=team.team, account=team.account, created_at=datetime.now(UTC), **fields)
    assert stack_storage().mail.put_new(mail)
    return mail.id


def store_hostile_mail(team: TeamAccount, remote: str) -> str:
    """A received mail as hostile as it gets, past the sanitiser: the console itself must keep it
    harmless."""
    return store_mail(
        team,
        direction="in",
        status="received",
        **{"from": "Attacker <attacker@example.test>"},
        to=[team.mailbox.address],
        subject="<img src=x onerror=alert('subject')>",
        body_text="plain",
        body_html=XSS_HTML.replace("{remote}", remote),
    )


def test_a_mail_full_of_xss_vectors_renders_without_running_anything(stack, admin, page, screenshots, remote):
    where = f"127.0.0.1:{remote.server_address[1]}"
    page.let_through.add(where)
    mail_id = store_hostile_mail(admin.team, where)
    sign_in(page, stack, admin)
    page.goto(f"{stack.info['api_url']}/console#/mail/{mail_id}")
    frame_element = page.wait_for_selector("#mail-body iframe")
    frame = frame_element.content_frame()
    frame.wait_for_selector("#visible")
    # Its load event comes once every subresource the mail names was fetched or refused: nothing
    # it holds can load after this (and no script of it runs in the sandbox).
    frame.wait_for_load_state("load")
    page.screenshot(path=str(screenshots / "hostile-mail.png"))

    assert page.dialogs == []
    assert page.foreign_requests == [] and remote.paths == []
    assert page.title() == "Mail console"
    assert frame_element.get_attribute("sandbox") == ""
    assert page.evaluate("() => document.cookie === '' && !window.pwned")
    assert page.inner_text("h2") == "<img src=x onerror=alert('subject')>"  # shown as text

    page.click("#allow-images")
    wait_until(  # the block was real: allowed, the tracker is asked for
        lambda: "/tracker.png" in remote.paths,
        interval=0.1,
        pause=lambda seconds: page.wait_for_timeout(seconds * 1000),  # the page's routing runs meanwhile
        failure=lambda: f"asked for {remote.paths}, refused {page.foreign_requests}",
    )
    assert page.dialogs == []


def outbox_explained(page, stack, user: ConsoleUser, mail_ids: list[str], answers: list[str]) -> str:
    """Why the outbox did not show the mail: what the page showed, what the API answered the page
    (and answers now), and what storage holds."""
    from tests.integration.test_http_api import call
    from tests.stack import stack_storage

    stored = {mail_id: getattr(stack_storage().mail.get(mail_id), "status", None) for mail_id in mail_ids}
    token = stack.token(user.email, user.password)
    now = {
        status: call(stack, "GET", f"/api/core/mail?direction=out&status={status}&limit=50", token=token)
        for status in ("failed", "unknown")
    }
    return (
        f"the page showed:\n{page.inner_text('#main')}\n"
        f"the API answered the page: {answers}\nand answers now: {now}\n"
        f"stored (id: status): {stored}\nbrowser dialogs: {page.dialogs}"
    )


def test_the_outbox_shows_failed_and_unknown_mail_with_their_errors(stack, admin, page):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    errors = {
        "failed": "550 5.1.1 recipient unknown",
        "unknown": "the connection dropped after the message; it may have been delivered",
    }
    mail_ids = [
        store_mail(admin.team, direction="out", status=status, subject=f"stuck {status}", error=error)
        for status, error in errors.items()
    ]
    sign_in(page, stack, admin)
    answers: list[str] = []
    page.on(
        "response",
        lambda answer: "/api/core/mail?" in answer.url and answers.append(f"{answer.status} {answer.url}"),
    )
    page.goto(stack.info["api_url"] + "/console#/outbox")
    try:
        page.wait_for_selector("#outbox tr >> text=stuck failed")
    except PlaywrightTimeout:
        pytest.fail(outbox_explained(page, stack, admin, mail_ids, answers))
    text = page.inner_text("#outbox")
    assert all(error in text for error in errors.values())
    assert "stuck unknown" in text and page.dialogs == []
