"""Keel's one outbound HTTP client: connectors, robot webhooks and anything else that calls out send
through it (docs/security.md, "SSRF via connectors/webhooks"). A base-layer package: it imports nothing of
Keel but keel.errors, so every layer above may use it.

    from keel.outbound import Credential, OutboundClient, OutboundError

    client = OutboundClient(allowlist=["hr.corp.example:8443"], timeout=(5, 30), total_timeout=120)
    token = Credential("https://hr.corp.example:8443", "Authorization", f"Bearer {secret}")
    resp = client.request("GET", "https://hr.corp.example:8443/people", credential=token)

What it guarantees: http and https only; the name is resolved once when the socket is opened, every
address checked (loopback, private, link-local, unspecified ... refused unless allowlisted) and the
socket connected to a checked one, on every redirect hop; a credential travels only to its origin; the
body is capped; one deadline covers the whole exchange; secrets never reach a log line or a message.

The parts: `origins` (what a URL's origin is; credentials bound to one), `policy` (which addresses may be
reached; the allowlist), `network` (the httpcore network backend that checks at connect time and keeps
the deadline; why httpcore is in its docstring), `client` (requests, redirects, caps, error mapping),
`redaction` (secrets out of logs), `errors`.
"""
from __future__ import annotations

from keel.outbound.client import DEFAULT_MAX_BYTES, Headers, OutboundClient, Response
from keel.outbound.errors import (
    ConnectionFailed,
    DestinationRefused,
    InvalidURL,
    OutboundError,
    OutboundTimeout,
    ResponseTooLarge,
    TooManyRedirects,
)
from keel.outbound.origins import Credential, Origin, origin_of
from keel.outbound.policy import AddressPolicy, parse_allow_entry, refusal_reason
from keel.outbound.redaction import SENSITIVE_HEADERS, is_sensitive_name, redact, redact_headers, redact_url

__all__ = [
    "DEFAULT_MAX_BYTES",
    "SENSITIVE_HEADERS",
    "AddressPolicy",
    "ConnectionFailed",
    "Credential",
    "DestinationRefused",
    "Headers",
    "InvalidURL",
    "Origin",
    "OutboundClient",
    "OutboundError",
    "OutboundTimeout",
    "Response",
    "ResponseTooLarge",
    "TooManyRedirects",
    "is_sensitive_name",
    "origin_of",
    "parse_allow_entry",
    "redact",
    "redact_headers",
    "redact_url",
    "refusal_reason",
]
