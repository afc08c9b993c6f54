"""OutboundClient: one request at a time, redirects followed here hop by hop, each hop's connection
opened through the guarded network layer (keel.outbound.network).

What it adds on top of the network layer: a credential travels only to the origin it was configured for,
and no secret-looking header follows a redirect to another origin (Budibase GHSA-mqhr-6j6h-74p5); the
Host header always names the URL's host; the body is capped; one deadline (total_timeout) covers every
hop, from the first connect to the last byte; failures become OutboundErrors with redacted URLs.
"""
from __future__ import annotations

import functools
import json as jsonlib
import logging
import socket
import ssl
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import httpcore

from keel.outbound.errors import (
    ConnectionFailed,
    OutboundError,
    OutboundTimeout,
    ResponseTooLarge,
    TooManyRedirects,
)
from keel.outbound.network import Deadline, GuardedBackend
from keel.outbound.origins import Credential, Origin, origin_of
from keel.outbound.policy import AddressPolicy, Resolver
from keel.outbound.redaction import is_sensitive_name, redact, redact_headers, redact_url

log = logging.getLogger("keel.outbound")

DEFAULT_MAX_BYTES = 20 * 1024 * 1024
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Set by the client from the URL and the body; a caller's value could point the request elsewhere
# (Host) or frame the body differently from what is sent (request smuggling).
_CLIENT_HEADERS = frozenset({"host", "content-length", "transfer-encoding"})
# What may stay unencoded in a request target; everything else (spaces, non-ASCII) is percent-encoded.
_TARGET_SAFE = "!#$%&'()*+,/:;=?@[]~"


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


@functools.cache
def _default_ssl_context() -> ssl.SSLContext:
    """The system's CAs (where an enterprise installs its own); loading them takes tens of milliseconds,
    so once per process, on first HTTPS use."""
    return ssl.create_default_context()


def _timeouts(timeout: float | tuple[float, float]) -> tuple[float, float]:
    if isinstance(timeout, (int, float)):
        return float(timeout), float(timeout)
    connect, read = timeout
    return float(connect), float(read)


class OutboundClient:
    """`timeout` is (connect, read) seconds, or one number for both: each phase of each hop gets it
    (read also bounds each wait while sending). `total_timeout` bounds the whole exchange, redirects and
    the body included. `allowlist` entries as keel.outbound.policy.parse_allow_entry reads them."""

    def __init__(self, allowlist: Iterable[str] = (), timeout: float | tuple[float, float] = (5.0, 30.0),
                 max_redirects: int = 5, max_bytes: int = DEFAULT_MAX_BYTES, *,
                 total_timeout: float = 300.0, resolve: Resolver = socket.getaddrinfo,
                 ssl_context: ssl.SSLContext | None = None, user_agent: str = "Keel"):
        self.policy = AddressPolicy(allowlist, resolve)
        self.timeout = _timeouts(timeout)
        self.max_redirects = max_redirects
        self.max_bytes = max_bytes
        self.total_timeout = total_timeout
        self.ssl_context = ssl_context
        self.user_agent = user_agent

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None, json: Any = None,
                data: bytes | str | None = None, credential: Credential | Sequence[Credential] | None = None,
                timeout: float | tuple[float, float] | None = None, secrets: Iterable[str] = ()) -> Response:
        """Send a request and return the final response (after redirects). `secrets` are extra values
        to scrub from logs and error messages (credential values are always scrubbed)."""
        creds = [credential] if isinstance(credential, Credential) else list(credential or ())
        secrets = [*secrets, *(c.value for c in creds)]
        timeouts = _timeouts(timeout) if timeout is not None else self.timeout
        deadline = Deadline(self.total_timeout)
        body = _encode_body(json, data)
        plain = {k: v for k, v in (headers or {}).items() if k.lower() not in _CLIENT_HEADERS}
        if json is not None and not any(k.lower() == "content-type" for k in plain):
            plain["Content-Type"] = "application/json"
        method = method.upper()
        first = origin_of(url)
        for hop in range(self.max_redirects + 1):
            origin = origin_of(url)
            if origin != first:
                # Left the configured origin: no plain secret-looking header follows.
                plain = {k: v for k, v in plain.items() if not is_sensitive_name(k)}
            sent = _with_credentials(plain, creds, origin)
            resp = self._send_once(method, url, origin, sent, body, timeouts, deadline, secrets)
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

    def _send_once(self, method: str, url: str, origin: Origin, headers: dict[str, str], body: bytes | None,
                   timeouts: tuple[float, float], deadline: Deadline, secrets: list[str]) -> Response:
        shown = redact_url(url, secrets)
        parts = urlsplit(url)
        target = quote(urlunsplit(("", "", parts.path or "/", parts.query, "")), safe=_TARGET_SAFE)
        named = {k.lower() for k in headers}
        defaults = {"User-Agent": self.user_agent, "Accept-Encoding": "identity", "Connection": "close"}
        sent = {"Host": origin.netloc, **{k: v for k, v in defaults.items() if k.lower() not in named}, **headers}
        log.debug("%s %s headers=%s", method, shown, redact_headers(sent, secrets))
        pool = httpcore.ConnectionPool(ssl_context=self.ssl_context or _default_ssl_context(),
                                       network_backend=GuardedBackend(self.policy, deadline, shown),
                                       max_keepalive_connections=0, retries=0)
        connect, read = timeouts
        try:
            with pool, pool.stream(
                    method, httpcore.URL(scheme=origin.scheme, host=origin.host, port=origin.port, target=target),
                    headers=[(k.encode("latin-1"), str(v).encode("latin-1")) for k, v in sent.items()],
                    content=body,
                    extensions={"timeout": {"connect": connect, "read": read, "write": read, "pool": connect}},
            ) as raw:
                received = Headers((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw.headers)
                payload = self._read_capped(raw, received, shown)
        except httpcore.TimeoutException as exc:
            if deadline.cut:
                raise OutboundTimeout(f"not complete after {deadline.seconds:g} s (total_timeout)", shown) from None
            if isinstance(exc, (httpcore.ConnectTimeout, httpcore.PoolTimeout)):
                raise OutboundTimeout(f"connect timed out after {connect:g} s", shown) from None
            if isinstance(exc, httpcore.WriteTimeout):
                raise OutboundTimeout(f"could not send the request within {read:g} s", shown) from None
            raise OutboundTimeout(f"no response within {read:g} s", shown) from None
        except (UnicodeEncodeError, httpcore.LocalProtocolError) as exc:
            # A header value that is not Latin-1, or holds CR/LF: never sent.
            raise OutboundError(f"invalid request: {redact(str(exc), secrets)}", shown) from None
        except httpcore.ConnectError as exc:
            raise ConnectionFailed(f"could not connect to {origin.host}:{origin.port}: "
                                   f"{redact(str(exc), secrets)}", shown) from None
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            raise ConnectionFailed(f"connection failed: {type(exc).__name__}: {redact(str(exc), secrets)}",
                                   shown) from None
        log.info("%s %s -> %s (%d bytes)", method, shown, raw.status, len(payload))
        return Response(raw.status, received, payload, url)

    def _read_capped(self, raw: httpcore.Response, headers: Headers, shown: str) -> bytes:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise ResponseTooLarge(f"response of {declared} bytes exceeds the limit of {self.max_bytes}", shown)
        chunks, size = [], 0
        for chunk in raw.iter_stream():
            size += len(chunk)
            if size > self.max_bytes:
                raise ResponseTooLarge(f"response exceeds the limit of {self.max_bytes} bytes", shown)
            chunks.append(chunk)
        return b"".join(chunks)


def _with_credentials(plain: dict[str, str], creds: list[Credential], origin: Origin) -> dict[str, str]:
    """The headers for one hop: a credential's header is sent only to its origin, and a plain header of
    the same name never stands in for it."""
    names = {c.header.lower() for c in creds}
    out = {k: v for k, v in plain.items() if k.lower() not in names}
    for c in creds:
        if c.applies_to(origin):
            out[c.header] = c.value
    return out


def _encode_body(json_value: Any, data: bytes | str | None) -> bytes | None:
    if json_value is not None and data is not None:
        raise OutboundError("pass either json or data, not both")
    if json_value is not None:
        return jsonlib.dumps(json_value, ensure_ascii=False).encode("utf-8")
    if isinstance(data, str):
        return data.encode("utf-8")
    return data
