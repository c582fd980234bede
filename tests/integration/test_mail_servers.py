"""The private Dovecot and Postfix instances of local/mailservers.py, exercised over real sockets."""

import contextlib
import imaplib
import poplib
import shutil
import smtplib
import socket
import ssl
import tempfile
import time
import uuid
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from local.mailservers import MESSAGE_SIZE_LIMIT, Mailbox, MailServerPorts, MailServers, process_group
from tests.support import wait_until

pytestmark = pytest.mark.integration

DOMAIN = "example.test"
DEMO = Mailbox(f"demo@{DOMAIN}", "demo-secret")
WRONG = "not-the-password"


def make_root() -> Path:
    # Not tmp_path: pytest's folders are 0700, and every folder on the path must be 0755.
    root = Path(tempfile.mkdtemp(prefix="mailservers-", dir="/tmp"))
    root.chmod(0o755)
    return root


@pytest.fixture(scope="module")
def servers() -> Iterator[MailServers]:
    root = make_root()
    instance = MailServers(root, domain=DOMAIN, ports=MailServerPorts.free())
    instance.add_mailbox(DEMO)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def demo(servers: MailServers) -> Mailbox:
    servers.remove_all_mail(DEMO.address)
    return DEMO


def message(to: str, sender: str = DEMO.address, body: str | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = f"test {uuid.uuid4().hex}"
    msg.set_content(body or f"token {uuid.uuid4().hex}\n")
    return msg


def wait_for_mail(servers: MailServers, address: str, count: int, timeout: float = 10.0) -> None:
    wait_until(
        lambda: servers.message_count(address) >= count,
        timeout=timeout,
        interval=0.02,
        failure=lambda: (
            f"{address} has {servers.message_count(address)} of {count} messages\n{servers.log_tail()}"
        ),
    )


@contextlib.contextmanager
def logged_in(pop: poplib.POP3, mailbox: Mailbox) -> Iterator[poplib.POP3]:
    """The POP3 session of `mailbox`, ended with QUIT."""
    try:
        pop.user(mailbox.address)
        pop.pass_(mailbox.password)
        yield pop
    finally:
        pop.quit()


def pop3_stls(servers: MailServers, mailbox: Mailbox) -> contextlib.AbstractContextManager[poplib.POP3]:
    pop = poplib.POP3(servers.host, servers.ports.pop3, timeout=10)
    pop.stls(context=ssl.create_default_context(cafile=servers.ca_file))
    return logged_in(pop, mailbox)


def retrieve_all(pop: poplib.POP3) -> list[EmailMessage]:
    count, _ = pop.stat()
    found = []
    for number in range(1, count + 1):
        _, lines, _ = pop.retr(number)
        parsed = message_from_bytes(b"\r\n".join(lines), policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        found.append(parsed)
    return found


class POP3From(poplib.POP3):
    """poplib has no source_address; negative tests need their own loopback address."""

    def __init__(self, host: str, port: int, source: str) -> None:
        self.source = source
        super().__init__(host, port, timeout=10)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self.source, 0))


def test_mail_sent_with_starttls_and_auth_is_read_back_over_pop3_with_stls(servers, demo):
    context = ssl.create_default_context(cafile=servers.ca_file)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    sent = message(demo.address)
    with smtplib.SMTP(servers.host, servers.ports.smtp, timeout=10) as smtp:
        smtp.starttls(context=context)  # verifies the certificate against the host name 127.0.0.1
        assert isinstance(smtp.sock, ssl.SSLSocket)
        smtp.login(demo.address, demo.password)
        assert smtp.send_message(sent) == {}
    wait_for_mail(servers, demo.address, 1)

    with pop3_stls(servers, demo) as pop:
        assert isinstance(pop.sock, ssl.SSLSocket)
        [received] = retrieve_all(pop)
    assert received["Subject"] == sent["Subject"]
    assert received.get_content().strip() == sent.get_content().strip()


def test_tls_certificate_is_not_trusted_without_the_ca_file(servers):
    with (
        smtplib.SMTP(servers.host, servers.ports.smtp, timeout=10) as smtp,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        smtp.starttls(context=ssl.create_default_context())


def test_implicit_tls_smtp_and_pop3_work(servers, demo):
    context = ssl.create_default_context(cafile=servers.ca_file)
    sent = message(demo.address)
    with smtplib.SMTP_SSL(servers.host, servers.ports.smtps, timeout=10, context=context) as smtp:
        smtp.login(demo.address, demo.password)
        smtp.send_message(sent)
    wait_for_mail(servers, demo.address, 1)

    with logged_in(
        poplib.POP3_SSL(servers.host, servers.ports.pop3s, timeout=10, context=context), demo
    ) as pop:
        [received] = retrieve_all(pop)
    assert received["Subject"] == sent["Subject"]


def test_imap_with_starttls_logs_in_and_sees_the_inbox(servers, demo):
    with smtplib.SMTP(servers.host, servers.ports.smtp, timeout=10) as smtp:
        smtp.send_message(message(demo.address))
    wait_for_mail(servers, demo.address, 1)
    with imaplib.IMAP4(servers.host, servers.ports.imap, timeout=10) as imap:
        imap.starttls(ssl_context=ssl.create_default_context(cafile=servers.ca_file))
        imap.login(demo.address, demo.password)
        status, data = imap.select("INBOX", readonly=True)
        assert status == "OK" and data == [b"1"]
        imap.logout()


def test_pop3_uidls_are_stable_across_sessions(servers, demo):
    with smtplib.SMTP(servers.host, servers.ports.smtp, timeout=10) as smtp:
        for _ in range(3):
            smtp.send_message(message(demo.address))
    wait_for_mail(servers, demo.address, 3)

    def uidls(delete_first: bool = False) -> list[bytes]:
        with pop3_stls(servers, demo) as pop:
            listing = [line.split()[1] for line in pop.uidl()[1]]
            if delete_first:
                pop.dele(1)
        return listing

    first = uidls(delete_first=True)
    second = uidls()
    assert len(first) == 3 and len(set(first)) == 3
    assert second == first[1:]


def test_wrong_password_is_refused_on_smtp_with_535(servers, demo):
    with smtplib.SMTP(servers.host, servers.ports.smtp, timeout=10, source_address=("127.0.0.2", 0)) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=servers.ca_file))
        # One attempt only: smtplib's login() would retry with LOGIN, and Dovecot delays a second
        # failure from the same address by seconds.
        smtp.ehlo()
        smtp.user, smtp.password = demo.address, WRONG
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            smtp.auth("PLAIN", smtp.auth_plain)
    assert refused.value.smtp_code == 535


def test_wrong_password_is_refused_on_pop3_with_err(servers, demo):
    # Dovecot listens on 127.0.0.1 and serves clients from any 127/8 address.
    pop = POP3From(servers.host, servers.ports.pop3, source="127.0.0.3")
    try:
        assert pop.sock.getsockname()[0] == "127.0.0.3"
        pop.user(demo.address)
        with pytest.raises(poplib.error_proto, match=r"^b'-ERR"):
            pop.pass_(WRONG)
    finally:
        pop.close()


def test_unknown_local_recipient_is_rejected_at_rcpt(servers):
    with smtplib.SMTP(servers.host, servers.ports.smtp, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail(DEMO.address)
        code, reply = smtp.rcpt(f"nobody@{DOMAIN}")
    assert code == 550, reply


def test_relay_to_a_foreign_domain_without_auth_is_refused(servers):
    with smtplib.SMTP(servers.host, servers.ports.smtp, timeout=10) as smtp:
        smtp.ehlo()
        smtp.mail(DEMO.address)
        code, reply = smtp.rcpt("someone@foreign.example")
    assert code == 554 and b"5.7.1" in reply, reply


def test_authenticated_relay_is_accepted_but_bounced_back_locally(servers, demo):
    with smtplib.SMTP(servers.host, servers.ports.smtp, timeout=10) as smtp:
        smtp.starttls(context=ssl.create_default_context(cafile=servers.ca_file))
        smtp.login(demo.address, demo.password)
        assert smtp.send_message(message("someone@foreign.example")) == {}
    wait_for_mail(servers, demo.address, 1)
    with pop3_stls(servers, demo) as pop:
        [bounce] = retrieve_all(pop)
    assert "MAILER-DAEMON" in bounce["From"]
    assert "someone@foreign.example" in bounce.as_string()


def test_mailbox_added_after_start_receives_mail(servers):
    added = Mailbox(f"added-{uuid.uuid4().hex[:8]}@{DOMAIN}", "added-secret")
    servers.add_mailbox(added)
    sent = message(added.address)
    with smtplib.SMTP(servers.host, servers.ports.smtp, timeout=10) as smtp:  # no AUTH needed to @domain
        assert smtp.send_message(sent) == {}
    wait_for_mail(servers, added.address, 1)
    with pop3_stls(servers, added) as pop:
        [received] = retrieve_all(pop)
    assert received["Subject"] == sent["Subject"]


def test_a_40_mb_message_is_accepted_and_delivered(servers, demo):
    with smtplib.SMTP(servers.host, servers.ports.smtp, timeout=30) as smtp:
        smtp.ehlo()
        assert int(smtp.esmtp_features["size"]) >= 40 * 1024 * 1024
        big = message(demo.address, body=("x" * 75 + "\n") * (41 * 1024 * 1024 // 76))
        assert len(big.as_bytes()) < MESSAGE_SIZE_LIMIT
        assert smtp.send_message(big) == {}
    wait_for_mail(servers, demo.address, 1, timeout=30)
    [stored] = [p for sub in ("new", "cur") for p in (servers.maildir(demo.address) / sub).iterdir()]
    assert stored.stat().st_size > 41 * 1024 * 1024 * 0.99


def listening_sockets(pids: list[int]) -> list[tuple[str, str, int]]:
    """(table, ip, port) of the listening TCP sockets held by the process groups of ``pids``."""
    inodes = set()
    for pid in [member for pgid in pids for member in process_group(pgid)]:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = fd.readlink().as_posix()
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:
                address, port = local.split(":")
                ip = socket.inet_ntoa(bytes.fromhex(address)[::-1]) if table == "tcp" else address
                found.append((table, ip, int(port, 16)))
    return found


def test_servers_listen_on_127_0_0_1_only(servers):
    found = listening_sockets(servers.pids())
    assert {port for _, _, port in found} == set(servers.ports.as_list())
    assert all(table == "tcp" and ip == "127.0.0.1" for table, ip, _ in found), found


def test_restart_on_an_existing_root_reuses_the_certificate():
    root = make_root()
    try:
        instance = MailServers(root, domain=DOMAIN, ports=MailServerPorts.free())
        instance.start()
        ca = instance.ca_file.read_bytes()
        instance.start()  # already running: nothing to do
        instance.stop()
        started = time.monotonic()
        instance.start()
        restart = time.monotonic() - started
        assert instance.is_running()
        instance.stop()
        assert instance.ca_file.read_bytes() == ca
        assert restart < 3, restart
    finally:
        shutil.rmtree(root, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_stop_leaves_no_process():
    root = make_root()
    try:
        instance = MailServers(root, domain=DOMAIN, ports=MailServerPorts.free())
        with instance:
            pids = instance.pids()
            assert len(pids) == 2 and instance.is_running()
            members = [member for pid in pids for member in process_group(pid)]
            assert len(members) > 2
        assert not instance.is_running() and instance.pids() == []
        assert [pid for pid in members if alive(pid)] == []
        assert [member for pid in pids for member in process_group(pid)] == []
        instance.stop()  # idempotent
    finally:
        shutil.rmtree(root, ignore_errors=True)
