"""Which addresses the service connects to (protocols/reach.py): only globally routable ones and the
deployment's MailServerNetworks, resolved once and connected to as checked. A team admin's account
must not open connections inside the network the functions run in."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from mailcore.errors import MailServerError
from mailcore.models import MailStatus, SendRequest
from mailcore.protocols import reach
from mailcore.protocols.pop3 import Pop3Session
from mailcore.protocols.reach import AddressNotAllowed
from mailcore.protocols.smtp import SmtpSession
from mailcore.protocols.tls import client_tls_context
from mailcore.protocols.transcript import Transcript
from mailcore.services.accounts import Accounts, CheckFailed, check_account
from mailcore.services.send import DirectSend, MailSendFailed
from mailcore.settings import Settings, read
from mailcore.teams import Caller, ResolvedAccount

from tests.fakes import MemoryAccountRevisions, MemoryPublisher, MemoryTeamSecrets, memory_storage
from tests.support import account_config, mail_account

REAL_GETADDRINFO = socket.getaddrinfo


@pytest.fixture
def nothing_internal_allowed() -> Iterator[None]:
    """As a deployment with an empty MailServerNetworks (the unit tests otherwise allow loopback)."""
    reach.allow_networks(())
    yield


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port on 127.0.0.1 that counts as reached when a connection waits in its queue."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    sock.setblocking(False)
    yield sock
    sock.close()


def was_reached(sock: socket.socket) -> bool:
    try:
        conn, _ = sock.accept()
    except BlockingIOError:
        return False
    conn.close()
    return True


def resolving(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """The resolver answers these names with these addresses (address literals resolve as ever);
    returns the list of names asked, in order."""
    asked: list[str] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in answers:
            return REAL_GETADDRINFO(host, port, *args, **kwargs)
        asked.append(host)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in answers[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return asked


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.1.2.3", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("100.64.0.1", "shared (carrier-grade NAT)"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("192.0.2.1", "private"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("ff02::1", "multicast"),
    ],
)
def test_an_address_that_is_not_globally_routable_is_refused_with_its_kind(address, kind):
    assert reach.refusal_kind(ipaddress.ip_address(address), allowed=()) == kind


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("::7f00:1", "loopback"),  # IPv4-compatible
        ("64:ff9b::a00:1", "private"),  # NAT64 (a VPC with DNS64) to 10.0.0.1
        ("2002:a00:1::1", "private"),  # 6to4 of 10.0.0.1
    ],
)
def test_an_ipv6_form_of_an_internal_ipv4_address_is_refused_as_that_address(address, kind):
    assert reach.refusal_kind(ipaddress.ip_address(address), allowed=()) == f"{kind} (as IPv6 {address})"


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700::1111", "::ffff:93.184.215.14"])
def test_a_globally_routable_address_is_allowed(address):
    assert reach.refusal_kind(ipaddress.ip_address(address), allowed=()) is None


def test_the_allowed_networks_let_their_addresses_through_and_no_others():
    allowed = reach.parse_networks("10.20.0.0/16, fd12::/16")
    for address in ("10.20.3.4", "::ffff:10.20.3.4", "fd12::5"):
        assert reach.refusal_kind(ipaddress.ip_address(address), allowed) is None
    for address in ("10.21.0.1", "127.0.0.1", "fd13::5", "169.254.169.254"):
        assert reach.refusal_kind(ipaddress.ip_address(address), allowed) is not None


def test_a_malformed_network_is_named():
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        reach.parse_networks("10.0.0.0/8,10.0.0.0/33")


@pytest.mark.parametrize(
    "addresses", [["93.184.215.14", "10.0.0.1"], ["10.0.0.1", "93.184.215.14"], ["2606:4700::1", "::1"]]
)
def test_a_name_with_any_internal_address_is_refused_as_a_whole(
    monkeypatch, nothing_internal_allowed, addresses
):
    resolving(monkeypatch, {"mixed.example.test": addresses})
    with pytest.raises(AddressNotAllowed, match=r"mixed\.example\.test resolves to"):
        reach.connect("mixed.example.test", 25, 1.0)


def test_the_connection_goes_to_the_checked_address_not_to_the_name_again(monkeypatch, listener):
    # DNS rebinding: the first answer passes the check, a later one would point inside.
    port = listener.getsockname()[1]
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])
    asked: list[str] = []

    def getaddrinfo(host: str, *args: Any, **kwargs: Any) -> list[Any]:
        if host != "rebinding.example.test":
            return REAL_GETADDRINFO(host, *args, **kwargs)
        asked.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in next(answers)]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with reach.connect("rebinding.example.test", port, 1.0) as sock:
        assert sock.getpeername() == ("127.0.0.1", port)
    assert asked == ["rebinding.example.test"] and was_reached(listener)


def test_the_allowed_networks_are_read_and_validated_from_the_environment(monkeypatch):
    for field in Settings.model_fields.values():
        if field.is_required():
            monkeypatch.setenv(str(field.alias), "x")
    monkeypatch.setenv("MAIL_SERVER_NETWORKS", " 10.20.0.0/16 ,fd12::/16")
    assert [str(n) for n in read(Settings).mail_server_networks] == ["10.20.0.0/16", "fd12::/16"]
    monkeypatch.setenv("MAIL_SERVER_NETWORKS", "")
    assert read(Settings).mail_server_networks == ()
    monkeypatch.setenv("MAIL_SERVER_NETWORKS", "10.0.0.1/8")
    with pytest.raises(ValueError, match=r"MAIL_SERVER_NETWORKS.*'10\.0\.0\.1/8'"):
        read(Settings)


def refused(session: Any) -> MailServerError:
    with pytest.raises(MailServerError) as failed:
        session.open()
    return failed.value


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_a_session_to_a_refused_address_fails_permanently_and_never_connects(
    nothing_internal_allowed, listener, protocol
):
    port = listener.getsockname()[1]
    endpoint = {"host": "127.0.0.1", "port": port, "security": "none"}
    account = mail_account(**{protocol: endpoint})
    session_kind = SmtpSession if protocol == "smtp" else Pop3Session
    error = refused(session_kind(account, transcript=Transcript(), tls_context=client_tls_context()))
    assert error.problem == "address_not_allowed" and not error.temporary and error.status == 422
    assert f"127.0.0.1:{port}" in error.message and "loopback" in error.message
    assert not was_reached(listener)


@pytest.mark.parametrize("protocol", ["smtp", "pop3"])
def test_a_session_over_implicit_tls_is_refused_before_any_connection(
    nothing_internal_allowed, listener, protocol
):
    port = listener.getsockname()[1]
    account = mail_account(**{protocol: {"host": "127.0.0.1", "port": port, "security": "ssl"}})
    session_kind = SmtpSession if protocol == "smtp" else Pop3Session
    error = refused(session_kind(account, transcript=Transcript(), tls_context=client_tls_context()))
    assert error.problem == "address_not_allowed"
    assert not was_reached(listener)


ADMIN = Caller("admin@example.test", frozenset({"sales"}), frozenset({"sales", "sales-admin"}))


def test_a_checked_account_on_a_loopback_address_is_refused_naming_the_host_and_not_saved(
    nothing_internal_allowed, listener
):
    port = listener.getsockname()[1]
    saved = account_config()
    secrets = MemoryTeamSecrets({"sales": {"type": "mail", "accounts": {"desk": saved}}})
    accounts = Accounts(
        secrets=secrets,
        revisions=MemoryAccountRevisions(),
        storage=memory_storage(),
        events=MemoryPublisher(),
        checker=lambda team, name, account: check_account(
            team, name, account, tls_context=client_tls_context()
        ),
    )
    change = account_config(
        smtp={"host": "127.0.0.1", "port": port, "security": "none"},
        pop3={"host": "127.0.0.1", "port": port, "security": "none"},
    )
    with pytest.raises(CheckFailed) as failed:
        accounts.save(ADMIN, "desk", None, change, check=True, if_match=None)
    assert failed.value.status == 422 and failed.value.code == "check_failed"
    assert failed.value.field == "pop3.host"
    for protocol in ("pop3", "smtp"):
        result = failed.value.check[protocol]
        assert result["problem"] == "address_not_allowed" and result["field"] == f"{protocol}.host"
    assert secrets.read("sales") == {"type": "mail", "accounts": {"desk": saved}}
    assert not was_reached(listener)


def test_a_send_through_a_refused_address_is_stored_failed_and_answered_422(
    nothing_internal_allowed, listener, storage
):
    port = listener.getsockname()[1]
    account = mail_account(smtp={"host": "127.0.0.1", "port": port, "security": "none"})
    with pytest.raises(MailSendFailed) as failed:
        DirectSend(storage=storage, tls_context=client_tls_context()).send(
            ResolvedAccount("sales", "desk", account),
            SendRequest(to="x@example.test", body_text="x"),
            transcript=Transcript(),
        )
    assert failed.value.status == 422 and failed.value.code == "address_not_allowed"
    assert storage.mail.get(failed.value.mail.id).status == MailStatus.FAILED
    assert not was_reached(listener)
