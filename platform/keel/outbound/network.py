"""The network layer under the outbound client: where the address check happens, and where the deadline
is kept. It is an httpcore network backend, so the check runs at the one moment that matters: when the
socket is opened, for the first request and for every redirect hop alike.

`GuardedBackend.connect_tcp(host, port)` resolves the name once (AddressPolicy), refuses the connection
if any address is not allowed, and connects to a checked address: a second DNS lookup that could answer
differently (DNS rebinding) never happens. TLS then verifies the certificate for the host name, not for
the address. Every stream it returns ends each read, write and TLS handshake by the exchange's deadline,
so a server that drips one byte at a time (headers or body) cannot hold a request past total_timeout.

Why httpcore (the transport layer of httpx) and not the hand-built http.client client Keel had:
- http.client offers no place for the check but overriding `connect` in two subclasses; one socket
  timeout serves connect, send and read; and `HTTPResponse.read(n)` loops inside its buffered reader until
  n bytes arrive, so no deadline can be checked between bytes: a server sending a byte every 0.75 s kept
  a 3-second request open for 14 s, and with a large Content-Length for hours. Fixing that meant reading
  the socket ourselves, i.e. writing our own HTTP/1.1 response parser (chunks, lengths, framing errors).
- httpcore has a documented network-backend interface taking (host, port), passes a timeout with each
  read and write (so one small stream wrapper keeps a whole-exchange deadline), has per-phase timeouts
  (connect, read, write), and parses with h11, which is maintained and strict about framing (conflicting
  Content-Length, bad chunk sizes, a 100 KB cap on the head).
- httpx itself is not used: its HTTPTransport accepts no network backend (only through a private
  attribute), its Client reads HTTP_PROXY/ALL_PROXY, .netrc and keeps cookies unless each is turned off
  (a proxy would make the check see only the proxy's address), and it parses the URL again with its own
  parser. Keel already follows redirects itself (credentials bound to origins), so httpx would add
  nothing here but those risks.
Name resolution itself (getaddrinfo) cannot be interrupted: the deadline is checked before it, and the
system resolver's own timeout bounds it.
"""
from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable
from typing import Any

import httpcore

from keel.outbound.policy import AddressPolicy

_WRITE_SLICE = 16 * 1024  # the deadline is checked between slices of a request body

# httpcore's DEBUG trace prints response heads (a Location or Set-Cookie may carry a secret) without
# redaction. Keel logs each exchange itself, redacted (keel.outbound.client), so a root logger at DEBUG
# must not switch that trace on; an operator who sets httpcore's level explicitly still can.
if logging.getLogger("httpcore").level == logging.NOTSET:
    logging.getLogger("httpcore").setLevel(logging.INFO)


class Deadline:
    """The moment (monotonic clock) by which an exchange must be over. `clamp` shortens a phase's
    timeout to what is left; `cut` says whether the last clamp did, i.e. whether a timeout that follows
    is the deadline's."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.at = time.monotonic() + seconds
        self.cut = False

    def clamp(self, timeout: float | None, expired: type[Exception]) -> float:
        left = self.at - time.monotonic()
        self.cut = timeout is None or left < timeout
        if left <= 0:
            raise expired(f"not complete after {self.seconds:g} s")
        return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every operation ends by the deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: Deadline):
        self._stream, self._deadline = stream, deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        for start in range(0, len(buffer), _WRITE_SLICE):
            self._stream.write(buffer[start:start + _WRITE_SLICE],
                               self._deadline.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        tls = self._stream.start_tls(ssl_context, server_hostname,
                                     self._deadline.clamp(timeout, httpcore.ConnectTimeout))
        return DeadlineStream(tls, self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """Opens TCP connections only to addresses the policy allows; see the module docstring. One per
    request hop: `shown` (the redacted URL) names the hop in error messages."""

    def __init__(self, policy: AddressPolicy, deadline: Deadline, shown: str):
        self.policy, self.deadline, self.shown = policy, deadline, shown
        self._plain = httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        self.deadline.clamp(timeout, httpcore.ConnectTimeout)
        addresses = self.policy.addresses(host, port, self.shown)
        last: Exception | None = None
        for ip in addresses:  # in the resolver's order; the next one when a connection fails
            try:
                stream = self._plain.connect_tcp(ip, port, self.deadline.clamp(timeout, httpcore.ConnectTimeout),
                                                 local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
                continue
            return DeadlineStream(stream, self.deadline)
        assert last is not None
        raise last

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("outbound requests never use unix sockets")
