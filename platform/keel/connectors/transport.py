"""The one outbound HTTP client of Keel: connectors, webhooks and imports all send through it.

Why it exists (SECURITY.md, "SSRF via connectors/webhooks"): a hostname check before the request is not
enough. The name is resolved once, every address it resolves to is checked, and the socket connects to
that checked address (a second DNS lookup could answer differently: DNS rebinding). The Host header,
TLS SNI and certificate check still use the hostname. Redirects are followed here, hop by hop, with the
same check, and a credential travels only to the origin it was configured for.
"""
from __future__ import annotations

import functools
import http.client
import ipaddress
import logging
import re
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

from keel.errors import KeelError

log = logging.getLogger("keel.connectors.transport")

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Headers never logged, and never carried to another origin on a redirect.
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                               "api-key", "x-auth-token", "x-access-token"})
_SENSITIVE_WORDS = ("token", "secret", "key", "password", "passwd", "auth", "signature", "session", "cookie",
                    "credential")
_HOSTNAME = re.compile(r"[A-Za-z0-9._-]+")
# inet_aton accepts 2130706433, 0x7f000001, 017700000001 and 127.1: all of them are 127.0.0.1.
_NUMERIC_HOST = re.compile(r"[0-9A-Fa-fXx.]+")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Resolver = Callable[..., Sequence[tuple[Any, ...]]]
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class OutboundError(KeelError):
    """An outbound request that could not be made or completed; `url` is already redacted."""

    def __init__(self, message: str, url: str | None = None):
        super().__init__(message)
        self.message = message
        self.url = url

    def __str__(self) -> str:
        return f"{self.message} ({self.url})" if self.url else self.message


class DestinationRefused(OutboundError):
    """The URL's scheme or resolved address is not allowed (SSRF protection)."""


class InvalidURL(OutboundError):
    pass


class TooManyRedirects(OutboundError):
    pass


class ResponseTooLarge(OutboundError):
    pass


class OutboundTimeout(OutboundError):
    pass


class ConnectionFailed(OutboundError):
    """Name resolution or the connection itself failed (refused, reset, TLS error)."""


# -- redaction ------------------------------------------------------------------------------------------

def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every secret value (and its URL-encoded form) replaced by ***. Every log line and
    error message that might contain a secret goes through this."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
        encoded = quote(secret, safe="")
        if encoded != secret:
            text = text.replace(encoded, "***")
    return text


def is_sensitive_name(name: str) -> bool:
    low = name.lower()
    return low in SENSITIVE_HEADERS or any(w in low for w in _SENSITIVE_WORDS)


def redact_url(url: str, secrets: Iterable[str] = ()) -> str:
    """The URL without user info, with the values of secret-looking query parameters masked."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        query = urlencode([(k, "***" if is_sensitive_name(k) else v)
                           for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
        url = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    except ValueError:
        url = "<unparseable URL>"
    return redact(url, secrets)


def redact_headers(headers: Mapping[str, str], secrets: Iterable[str] = ()) -> dict[str, str]:
    return {k: "***" if is_sensitive_name(k) else redact(str(v), secrets) for k, v in headers.items()}


# -- origins, credentials, allowlist ---------------------------------------------------------------------

@dataclass(frozen=True)
class Origin:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def origin_of(url: str) -> Origin:
    """(scheme, host, port) of a URL, with the default port filled in and the host normalised."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidURL(f"invalid URL: {exc}", redact_url(url)) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise DestinationRefused(f"only http and https URLs are allowed, not {scheme or 'a relative URL'!r}",
                                 redact_url(url))
    if not parts.hostname:
        raise InvalidURL("URL has no host", redact_url(url))
    if parts.username is not None or parts.password is not None:
        # user:pass@host hides the real host from a reader (allowed.com@evil.com); use a Credential.
        raise InvalidURL("credentials in the URL are not allowed; configure them as a secret",
                         redact_url(url))
    return Origin(scheme, _normalise_host(parts.hostname, url), port or (443 if scheme == "https" else 80))


def _normalise_host(host: str, url: str) -> str:
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


def _literal_ip(host: str) -> Address | None:
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


@dataclass(frozen=True)
class Credential:
    """A secret header bound to one origin: attached only to requests whose origin equals it."""

    origin: str
    header: str
    value: str = field(repr=False)

    def applies_to(self, origin: Origin) -> bool:
        return origin_of(self.origin) == origin


@dataclass(frozen=True)
class _AllowEntry:
    host: str | None = None
    network: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    port: int | None = None

    def permits(self, host: str, port: int, ip: Address) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == host
        return self.network is not None and _canonical(ip) in self.network


def _canonical(ip: Address) -> Address:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def parse_allow_entry(entry: str) -> _AllowEntry:
    """'host', 'host:port', 'ip', 'ip:port', '[v6]:port' or a CIDR such as '10.20.0.0/16'."""
    text = entry.strip().lower()
    try:
        if "/" in text:
            return _AllowEntry(network=ipaddress.ip_network(text, strict=False))
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
        ip = _literal_ip(host)
        if ip is not None:
            return _AllowEntry(network=ipaddress.ip_network(_canonical(ip)), port=port)
        return _AllowEntry(host=_normalise_host(host, entry), port=port)
    except (ValueError, OutboundError) as exc:
        raise OutboundError(f"invalid allowlist entry {entry!r}: {exc}") from None


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


# -- responses -------------------------------------------------------------------------------------------

class Headers(Mapping[str, str]):
    """Response headers, case-insensitive; repeated headers joined with ', '."""

    def __init__(self, items: Iterable[tuple[str, str]]):
        self._items: dict[str, str] = {}
        for k, v in items:
            key = k.lower()
            self._items[key] = f"{self._items[key]}, {v}" if key in self._items else v

    def __getitem__(self, key: str) -> str:
        return self._items[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Response:
    status: int
    headers: Headers
    body: bytes
    url: str


# -- connections pinned to a checked address -------------------------------------------------------------

def _open_socket(ip: str, port: int, connect_timeout: float, read_timeout: float) -> socket.socket:
    sock = socket.create_connection((ip, port), timeout=connect_timeout)
    sock.settimeout(read_timeout)
    return sock


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, ip: str, timeouts: tuple[float, float]):
        super().__init__(host, port, timeout=timeouts[1])
        self._ip, self._timeouts = ip, timeouts

    def connect(self) -> None:
        self.sock = _open_socket(self._ip, self.port, *self._timeouts)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, port: int, ip: str, timeouts: tuple[float, float], context: ssl.SSLContext):
        super().__init__(host, port, timeout=timeouts[1], context=context)
        self._ip, self._timeouts = ip, timeouts

    def connect(self) -> None:
        sock = _open_socket(self._ip, self.port, *self._timeouts)
        # SNI and certificate verification for the hostname, not for the address we connected to.
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


# -- the client ------------------------------------------------------------------------------------------

@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """Loading the system CAs takes tens of milliseconds: once per process, on first HTTPS use."""
    return ssl.create_default_context()


def _timeouts(timeout: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(timeout, (int, float)):
        return float(timeout), float(timeout)
    connect, read = timeout
    return float(connect), float(read)


class OutboundClient:
    """Sends one request at a time, following redirects itself; see the module docstring."""

    def __init__(self, allowlist: Iterable[str] = (), timeout: float | tuple[float, float] = (5.0, 30.0),
                 max_redirects: int = 5, max_bytes: int = DEFAULT_MAX_BYTES, *,
                 total_timeout: float = 300.0, resolve: Resolver = socket.getaddrinfo,
                 ssl_context: ssl.SSLContext | None = None, user_agent: str = "Keel"):
        self.allowlist = tuple(parse_allow_entry(e) for e in allowlist)
        self.timeout = _timeouts(timeout)
        self.max_redirects = max_redirects
        self.max_bytes = max_bytes
        self.total_timeout = total_timeout
        self.resolve = resolve
        self.ssl_context = ssl_context
        self.user_agent = user_agent

    # public ------------------------------------------------------------------------------------------
    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, json: Any = None,
                data: bytes | str | None = None, credential: Credential | Sequence[Credential] | None = None,
                timeout: float | tuple[float, float] | None = None, secrets: Iterable[str] = ()) -> Response:
        """Send a request and return the final response (after redirects). `secrets` are extra values
        to scrub from logs and error messages (credential values are always scrubbed)."""
        creds = [credential] if isinstance(credential, Credential) else list(credential or ())
        secrets = [*secrets, *(c.value for c in creds)]
        timeouts = _timeouts(timeout) if timeout is not None else self.timeout
        body = _encode_body(json, data)
        # Host always names the URL's host (the one checked and verified), never a caller's choice.
        plain = {k: v for k, v in (headers or {}).items() if k.lower() != "host"}
        if json is not None and not any(k.lower() == "content-type" for k in plain):
            plain["Content-Type"] = "application/json"
        method = method.upper()
        first = origin_of(url)
        for hop in range(self.max_redirects + 1):
            origin = origin_of(url)
            if origin != first:
                # Left the configured origin: no plain secret-looking header follows (Budibase advisory).
                plain = {k: v for k, v in plain.items() if not is_sensitive_name(k)}
            sent = self._with_credentials(plain, creds, origin)
            resp = self._send_once(method, url, origin, sent, body, timeouts, secrets)
            location = resp.headers.get("location")
            if resp.status not in REDIRECT_STATUSES or not location:
                return resp
            if hop == self.max_redirects:
                raise TooManyRedirects(f"more than {self.max_redirects} redirects", redact_url(url, secrets))
            next_url = urljoin(url, location.strip())
            log.info("redirect %s %s -> %s", resp.status, redact_url(url, secrets), redact_url(next_url, secrets))
            if resp.status == 303 or (resp.status in (301, 302) and method == "POST"):
                method, body = "GET", None
                plain = {k: v for k, v in plain.items() if k.lower() != "content-type"}
            url = urlunsplit(urlsplit(next_url)._replace(fragment=""))
        raise AssertionError("unreachable")

    # internals ---------------------------------------------------------------------------------------
    @staticmethod
    def _with_credentials(plain: dict[str, str], creds: list[Credential], origin: Origin) -> dict[str, str]:
        names = {c.header.lower() for c in creds}
        out = {k: v for k, v in plain.items() if k.lower() not in names}
        for c in creds:
            if c.applies_to(origin):
                out[c.header] = c.value
        return out

    def checked_addresses(self, origin: Origin, url: str = "", secrets: Iterable[str] = ()) -> list[str]:
        """Resolve the origin's host once and check every address; the list to connect to, in order."""
        shown = redact_url(url, secrets) if url else str(origin)
        ip = _literal_ip(origin.host)
        if ip is not None:
            addresses = [ip]
        else:
            try:
                infos = self.resolve(origin.host, origin.port, 0, socket.SOCK_STREAM)
            except (OSError, UnicodeError) as exc:
                raise ConnectionFailed(f"could not resolve host {origin.host!r}: {exc}", shown) from None
            addresses = []
            for info in infos:
                raw = str(info[4][0]).split("%", 1)[0]
                try:
                    addresses.append(ipaddress.ip_address(raw))
                except ValueError:
                    raise ConnectionFailed(f"resolver returned an invalid address for {origin.host!r}",
                                           shown) from None
            if not addresses:
                raise ConnectionFailed(f"host {origin.host!r} has no address", shown)
        for address in addresses:
            if any(e.permits(origin.host, origin.port, address) for e in self.allowlist):
                continue
            reason = refusal_reason(address)
            if reason:
                raise DestinationRefused(
                    f"destination {origin.host}:{origin.port} is a {reason} address ({address}); outbound "
                    "requests to it are refused unless an administrator allowlists it", shown)
        return list(dict.fromkeys(str(_canonical(a)) for a in addresses))

    def _connect(self, origin: Origin, addresses: list[str], timeouts: tuple[float, float], shown: str):
        last: Exception | None = None
        for ip in addresses:
            if origin.scheme == "https":
                conn: http.client.HTTPConnection = _PinnedHTTPSConnection(
                    origin.host, origin.port, ip, timeouts, self.ssl_context or _default_ssl_context())
            else:
                conn = _PinnedHTTPConnection(origin.host, origin.port, ip, timeouts)
            try:
                conn.connect()
                return conn
            except TimeoutError:
                conn.close()
                last = OutboundTimeout(f"connect timed out after {timeouts[0]:g} s", shown)
            except (OSError, ssl.SSLError) as exc:
                conn.close()
                last = ConnectionFailed(f"could not connect to {origin.host}:{origin.port}: {exc}", shown)
        assert last is not None
        raise last

    def _send_once(self, method: str, url: str, origin: Origin, headers: dict[str, str], body: bytes | None,
                   timeouts: tuple[float, float], secrets: list[str]) -> Response:
        shown = redact_url(url, secrets)
        addresses = self.checked_addresses(origin, url, secrets)
        parts = urlsplit(url)
        target = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        sent = {"User-Agent": self.user_agent, "Accept-Encoding": "identity", "Connection": "close", **headers}
        log.debug("%s %s headers=%s", method, shown, redact_headers(sent, secrets))
        started = time.monotonic()
        conn = self._connect(origin, addresses, timeouts, shown)
        try:
            try:
                conn.request(method, target, body=body, headers=sent)
                raw = conn.getresponse()
                payload = self._read_capped(raw, started, shown)
            except TimeoutError:
                raise OutboundTimeout(f"no response within {timeouts[1]:g} s", shown) from None
            except ValueError as exc:  # http.client refuses header values with CR/LF
                raise OutboundError(f"invalid request: {redact(str(exc), secrets)}", shown) from None
            except (OSError, http.client.HTTPException) as exc:
                raise ConnectionFailed(f"connection failed: {type(exc).__name__}: {redact(str(exc), secrets)}",
                                       shown) from None
        finally:
            conn.close()
        log.info("%s %s -> %s (%d bytes)", method, shown, raw.status, len(payload))
        return Response(raw.status, Headers(raw.getheaders()), payload, url)

    def _read_capped(self, raw: http.client.HTTPResponse, started: float, shown: str) -> bytes:
        declared = raw.getheader("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            raise ResponseTooLarge(f"response of {declared} bytes exceeds the limit of {self.max_bytes}", shown)
        chunks, size = [], 0
        while chunk := raw.read(65536):
            size += len(chunk)
            if size > self.max_bytes:
                raise ResponseTooLarge(f"response exceeds the limit of {self.max_bytes} bytes", shown)
            if time.monotonic() - started > self.total_timeout:
                raise OutboundTimeout(f"response not complete after {self.total_timeout:g} s", shown)
            chunks.append(chunk)
        return b"".join(chunks)


def _encode_body(json_value: Any, data: bytes | str | None) -> bytes | None:
    if json_value is not None and data is not None:
        raise OutboundError("pass either json or data, not both")
    if json_value is not None:
        import json as _json

        return _json.dumps(json_value, ensure_ascii=False).encode("utf-8")
    if isinstance(data, str):
        return data.encode("utf-8")
    return data
