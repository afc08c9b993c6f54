"""Origins: the (scheme, host, port) a URL names, read once and strictly, and the credentials bound to one.

The origin parsed here is what everything else uses: the address check, the allowlist, the Host header,
TLS verification and credential binding. The request sent is built from its parts, so no second URL
parser can read the URL differently (the parser differentials behind many SSRF bypasses).
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from keel.outbound.errors import DestinationRefused, InvalidURL
from keel.outbound.redaction import redact_url

_HOSTNAME = re.compile(r"[A-Za-z0-9._-]+")
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str  # lower-case; IDNA-encoded; an IPv6 literal without brackets, compressed
    port: int

    @property
    def netloc(self) -> str:
        """host[:port] as the Host header carries it: brackets around IPv6, the default port left out."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if DEFAULT_PORTS[self.scheme] == self.port else f"{host}:{self.port}"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def origin_of(url: str) -> Origin:
    """(scheme, host, port) of a URL, with the default port filled in and the host normalised. Only
    http and https; no user info (allowed.test@evil.test hides the real host from a reader)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"invalid URL: {exc}", redact_url(url)) from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise DestinationRefused(f"only http and https URLs are allowed, not {scheme or 'a relative URL'!r}",
                                 redact_url(url))
    if not parts.hostname:
        raise InvalidURL("URL has no host", redact_url(url))
    if parts.username is not None or parts.password is not None:
        raise InvalidURL("credentials in the URL are not allowed; configure them as a secret",
                         redact_url(url))
    return Origin(scheme, normalise_host(parts.hostname, url), port or DEFAULT_PORTS[scheme])


def normalise_host(host: str, url: str) -> str:
    """The canonical spelling of a host name or IP literal; `url` only names it in error messages."""
    host = host.lower().rstrip(".")
    if ":" in host:  # an IPv6 literal (urlsplit removed the brackets)
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise InvalidURL("invalid IPv6 address in URL", redact_url(url)) from None
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise InvalidURL("invalid host name in URL", redact_url(url)) from None
    if not _HOSTNAME.fullmatch(host):
        raise InvalidURL("invalid host name in URL", redact_url(url))
    return host


@dataclass(frozen=True)
class Credential:
    """A secret header bound to one origin: attached only to requests whose origin equals it."""

    origin: str
    header: str
    value: str = field(repr=False)

    def applies_to(self, origin: Origin) -> bool:
        return origin_of(self.origin) == origin
