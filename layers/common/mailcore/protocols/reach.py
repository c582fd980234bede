"""Which addresses the service may open a connection to: every SMTP and POP3 connection starts here.

A team administrator names the mail servers, so a name must not turn the functions into a way into
the network they run in (Lambda's runtime API on 127.0.0.1:9001, the instance metadata on
169.254.169.254, a VPC's private hosts), nor the account check into a port scanner. The host is
resolved here, every address it resolves to must be globally routable (or lie in the deployment's
allowed networks, MailServerNetworks), and the connection goes to the address that was checked, never
to the name again: a DNS answer that changes between the check and the connect (rebinding) cannot
reach inside. TLS still verifies the certificate against the host name (the callers pass it as
server_hostname).

The allowed networks are the process's: its composition root sets them from the validated settings
(wiring/parts.py), the mail-check tool from its environment. Until then none are allowed.
"""

from __future__ import annotations

import ipaddress
import math
import socket
from collections.abc import Iterable

from mailcore.protocols.deadline import Deadline, DeadlinePassed

type Address = ipaddress.IPv4Address | ipaddress.IPv6Address
type Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# IPv6 forms that carry an IPv4 address a host or a NAT64 gateway may route to: ::a.b.c.d
# (IPv4-compatible, deprecated) and the well-known NAT64 prefix (a VPC with DNS64 answers with it).
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")

# What an address that is not globally routable is, in the words a diagnosis uses: first match wins.
_CLASSES: tuple[tuple[str, str], ...] = (
    ("is_unspecified", "unspecified"),
    ("is_loopback", "loopback"),
    ("is_link_local", "link-local"),
    ("is_multicast", "multicast"),
    ("is_reserved", "reserved"),
    ("is_private", "private"),
)
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")

_allowed: tuple[Network, ...] = ()


class AddressNotAllowed(OSError):
    """The host resolves to an address the service may not connect to. Permanent: it fails the same
    way until the account (or the deployment's MailServerNetworks) changes."""

    def __init__(self, host: str, address: Address, kind: str) -> None:
        super().__init__(f"{host} resolves to {address}, a {kind} address")
        self.host = host
        self.address = address
        self.kind = kind


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDRs ("10.1.0.0/16, fd00::/8"); raises ValueError naming a malformed one."""
    networks = []
    for part in text.split(","):
        if part := part.strip():
            try:
                networks.append(ipaddress.ip_network(part))
            except ValueError as error:
                raise ValueError(f"{part!r} is not a network in CIDR form ({error})") from None
    return tuple(networks)


def allow_networks(networks: Iterable[Network]) -> None:
    """The networks this process may connect to besides the globally routable addresses."""
    global _allowed
    _allowed = tuple(networks)


def allowed_networks() -> tuple[Network, ...]:
    return _allowed


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64 or (address in _IPV4_COMPATIBLE and int(address) > 1):  # not :: nor ::1
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal_kind(address: Address, allowed: Iterable[Network] | None = None) -> str | None:
    """None when the service may connect to `address`; else what kind of address it is."""
    networks = tuple(_allowed if allowed is None else allowed)
    if any(address in network for network in networks if network.version == address.version):
        return None
    inner = _embedded_ipv4(address)
    if inner is not None:
        kind = refusal_kind(inner, networks)
        return None if kind is None else f"{kind} (as IPv6 {address})"
    if address.is_global and not address.is_multicast:
        return None
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared (carrier-grade NAT)"
    return next((kind for test, kind in _CLASSES if getattr(address, test)), "not globally routable")


def allowed_addresses(host: str, port: int) -> list[tuple[socket.AddressFamily, Address]]:
    """Every address `host` resolves to, in the resolver's order, when each one may be connected
    to; raises AddressNotAllowed on the first that may not (a name with any internal address is
    refused as a whole), socket.gaierror when it does not resolve."""
    found: list[tuple[socket.AddressFamily, Address]] = []
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]))
        kind = refusal_kind(address)
        if kind is not None:
            raise AddressNotAllowed(host, address, kind)
        if (family, address) not in found:
            found.append((family, address))
    if not found:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} has no IPv4 or IPv6 address")
    return found


def connect(
    host: str,
    port: int,
    timeout: float | None,
    source_address: tuple[str, int] | None = None,
    deadline: Deadline | None = None,
) -> socket.socket:
    """A TCP connection to `host`, made to the addresses checked above (each tried in turn), all
    within `timeout` (and `deadline`): a name with many addresses that drop SYNs must not take the
    timeout once per address. Each address gets an equal share of what is left, so a dead first
    one cannot starve the others. The socket comes back with `timeout` as its timeout."""
    within = (deadline or Deadline.never()).earlier(timeout)
    addresses = allowed_addresses(host, port)
    failure: OSError | None = None
    tried = 0
    for _, address in addresses:
        left = within.left()
        if left <= 0:
            break
        share = left / (len(addresses) - tried) if math.isfinite(left) else None
        tried += 1
        try:
            # An address literal: create_connection asks no resolver again.
            sock = socket.create_connection((str(address), port), share, source_address)
        except OSError as error:
            failure = error
            continue
        sock.settimeout(timeout)
        return sock
    if not tried:
        raise DeadlinePassed(
            f"no time was left to connect to {host} port {port} (its {within.told()} are over)"
        )
    if within.passed() and (failure is None or isinstance(failure, TimeoutError)):
        raise DeadlinePassed(
            f"could not connect to {host} port {port} within {within.told()} "
            f"({tried} of {len(addresses)} addresses tried)"
        )
    assert failure is not None
    raise failure
