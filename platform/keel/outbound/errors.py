"""What can go wrong with an outbound request. Every message is safe to log and to show an admin: URLs in
them are redacted (keel.outbound.redaction) before the error is raised."""
from __future__ import annotations

from keel.errors import KeelError


class OutboundError(KeelError):
    """An outbound request that could not be made or completed; `url` is already redacted. Refused
    destinations, bad URLs, redirect loops and oversized answers stay so on a retry (`retryable`
    False); timeouts and failed connections may not."""

    retryable = False

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
    """A phase (connect, send, wait for the answer) took longer than its timeout, or the whole exchange
    outlasted the client's total_timeout."""

    retryable = True


class ConnectionFailed(OutboundError):
    """Name resolution or the connection itself failed (refused, reset, TLS error, a malformed answer)."""

    retryable = True
