"""Secrets out of logs and error messages: every line the outbound client writes, and every message it
raises, goes through these."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

# Headers never logged, and never carried to another origin on a redirect.
SENSITIVE_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                               "api-key", "x-auth-token", "x-access-token"})
_SENSITIVE_WORDS = ("token", "secret", "key", "password", "passwd", "auth", "signature", "session", "cookie",
                    "credential")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every secret value (and its URL-encoded form) replaced by ***."""
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, "***")
        encoded = quote(secret, safe="")
        if encoded != secret:
            text = text.replace(encoded, "***")
    return text


def is_sensitive_name(name: str) -> bool:
    """A header or query parameter name that looks like it carries a credential."""
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
