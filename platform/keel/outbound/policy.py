"""Which addresses an outbound request may reach: public ones, and the private ones an administrator
allowlists. Loopback, link-local (cloud metadata at 169.254.169.254), private, unspecified (0.0.0.0, ::),
multicast and reserved addresses are refused, also when they hide inside an IPv6 address (IPv4-mapped,
NAT64, 6to4, Teredo) or behind the numeric spellings inet_aton accepts (2130706433, 0x7f000001, 127.1).

AddressPolicy.addresses resolves a name once and checks every address it resolves to; the network layer
(keel.outbound.network) calls it when it opens a socket and connects only to what it returned.
"""
from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from keel.outbound.errors import ConnectionFailed, DestinationRefused, OutboundError
from keel.outbound.origins import normalise_host

# inet_aton accepts 2130706433, 0x7f000001, 017700000001 and 127.1: all of them are 127.0.0.1.
_NUMERIC_HOST = re.compile(r"[0-9A-Fa-fXx.]+")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Resolver = Callable[..., Sequence[tuple[Any, ...]]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def literal_ip(host: str) -> Address | None:
    """The address a host string denotes by itself, including the numeric tricks inet_aton accepts."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST.fullmatch(host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def canonical(ip: Address) -> Address:
    """An IPv4-mapped IPv6 address as the IPv4 address it is; any other address unchanged."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def refusal_reason(ip: Address) -> str | None:
    """Why an address may not be reached without an allowlist entry, or None for a public address.
    Addresses embedded in IPv6 (IPv4-mapped, NAT64, 6to4, Teredo) are judged by what they embed."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None,
                    ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None]
        for inner in embedded:
            if inner is not None and (reason := refusal_reason(inner)):
                return reason
    for reason, flag in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                         ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                         ("private", ip.is_private), ("reserved", ip.is_reserved),
                         ("non-public", not ip.is_global)):
        if flag:
            return reason
    return None


@dataclass(frozen=True)
class AllowEntry:
    """One allowlist entry: a host name or a network, optionally limited to one port."""

    host: str | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    def permits(self, host: str, port: int, ip: Address) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == host
        return self.network is not None and canonical(ip) in self.network


def parse_allow_entry(entry: str) -> AllowEntry:
    """'host', 'host:port', 'ip', 'ip:port', '[v6]:port' or a CIDR such as '10.20.0.0/16'."""
    text = entry.strip().lower()
    try:
        if "/" in text:
            return AllowEntry(network=ipaddress.ip_network(text, strict=False))
        port: int | None = None
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest:
                port = int(rest.removeprefix(":"))
        elif text.count(":") == 1:
            host, _, p = text.partition(":")
            port = int(p)
        else:
            host = text
        if port is not None and not 0 < port < 65536:
            raise ValueError("port out of range")
        ip = literal_ip(host)
        if ip is not None:
            return AllowEntry(network=ipaddress.ip_network(canonical(ip)), port=port)
        return AllowEntry(host=normalise_host(host, entry), port=port)
    except (ValueError, OutboundError) as exc:
        raise OutboundError(f"invalid allowlist entry {entry!r}: {exc}") from None


class AddressPolicy:
    """An allowlist and a resolver: `addresses(host, port)` is the list of checked addresses to connect
    to, or an error. `resolve` is getaddrinfo unless a test injects a stand-in."""

    def __init__(self, allowlist: Iterable[str] = (), resolve: Resolver = socket.getaddrinfo):
        self.allowlist = tuple(parse_allow_entry(e) for e in allowlist)
        self.resolve = resolve

    def addresses(self, host: str, port: int, shown: str | None = None) -> list[str]:
        """Resolve `host` once and check every address it resolves to: one refused address refuses the
        name (a resolver may answer in any order). `shown` is the redacted URL for messages."""
        shown = shown or f"{host}:{port}"
        ip = literal_ip(host)
        if ip is not None:
            found = [ip]
        else:
            try:
                infos = self.resolve(host, port, 0, socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                raise ConnectionFailed(f"could not resolve host {host!r}: {exc}", shown) from None
            found = []
            for info in infos:
                raw = str(info[4][0]).split("%", 1)[0]
                try:
                    found.append(ipaddress.ip_address(raw))
                except ValueError:
                    raise ConnectionFailed(f"resolver returned an invalid address for {host!r}", shown) from None
            if not found:
                raise ConnectionFailed(f"host {host!r} has no address", shown)
        for address in found:
            if any(e.permits(host, port, address) for e in self.allowlist):
                continue
            reason = refusal_reason(address)
            if reason:
                raise DestinationRefused(
                    f"destination {host}:{port} is a {reason} address ({address}); outbound "
                    "requests to it are refused unless an administrator allowlists it", shown)
        return list(dict.fromkeys(str(canonical(a)) for a in found))
