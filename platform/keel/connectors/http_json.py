"""The generic HTTP JSON connector: fetch a list of items from a JSON API, page by page.

Configuration (validated against HTTP_JSON_SCHEMA): a URL template whose origin is fixed text, header
and query-parameter templates (the only places secrets may appear, as `{{ secrets.NAME }}`), a JSON
body whose string leaves are templates, where the item list sits in the response, pagination, timeouts,
retries and rate limits. Run-time values (`values=`) are available to every template as `vars`.

Secrets are read from the environment variables the definition names, at run time. A header that
carries a secret becomes an outbound Credential bound to the configured origin, so a redirect to
another origin never receives it; secret values are scrubbed from every log line and error message.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from jsonschema import Draft202012Validator

from keel.connectors.mapping import MAPPING_SCHEMA, MISSING, mapping_problems, parse_path
from keel.connectors.templates import render, template_problem
from keel.errors import KeelError
from keel.outbound import (
    ConnectionFailed,
    Credential,
    OutboundClient,
    OutboundTimeout,
    Response,
    is_sensitive_name,
    origin_of,
    redact,
    redact_url,
)
from keel.sandbox import AnyKeys

log = logging.getLogger("keel.connectors.http_json")

_NAME = {"type": "string", "minLength": 1, "maxLength": 100}
_SECONDS = {"type": "number", "exclusiveMinimum": 0, "maximum": 600}

HTTP_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://keel.dev/schemas/connectors/http_json.json",
    "title": "config of an http_json connector",
    "type": "object",
    "required": ["url"],
    "additionalProperties": False,
    "properties": {
        # The origin (scheme, host, port) is literal text: templates may fill in the path and query
        # only, so no value can send the request (and its credentials) to another host.
        "url": {"type": "string", "maxLength": 2000, "pattern": r"^https?://[^/?#{}%\s]+([/?#].*)?$"},
        "method": {"enum": ["GET", "POST"]},
        "headers": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 4000}},
        "params": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
        "body": {"type": ["object", "array"]},
        "items": {"type": "string", "maxLength": 500},
        "pagination": {
            "type": "object",
            "required": ["type"],
            "additionalProperties": False,
            "properties": {
                "type": {"enum": ["none", "page", "offset", "cursor"]},
                "in": {"enum": ["query", "body"]},
                "page_param": _NAME, "size_param": _NAME, "offset_param": _NAME, "limit_param": _NAME,
                "cursor_param": _NAME,
                "next": {"type": "string", "maxLength": 500},
                "start": {"type": "integer", "minimum": 0},
                "page_size": {"type": "integer", "minimum": 1, "maximum": 10000},
                "max_pages": {"type": "integer", "minimum": 1, "maximum": 100000},
                "stop_on_short_page": {"type": "boolean"},
            },
            "allOf": [{"if": {"properties": {"type": {"const": "cursor"}}},
                       "then": {"required": ["next"]}}],
        },
        "timeout": {"oneOf": [_SECONDS, {"type": "object", "additionalProperties": False,
                                         "required": ["connect", "read"],
                                         "properties": {"connect": _SECONDS, "read": _SECONDS}}]},
        "retries": {"type": "object", "additionalProperties": False, "properties": {
            "max": {"type": "integer", "minimum": 0, "maximum": 10},
            "backoff_seconds": {"type": "array", "maxItems": 10,
                                "items": {"type": "number", "minimum": 0, "maximum": 600}}}},
        "rate_limit": {"type": "object", "additionalProperties": False, "properties": {
            "max_waits": {"type": "integer", "minimum": 0, "maximum": 100},
            "max_wait_seconds": {"type": "number", "minimum": 0, "maximum": 3600}}},
        "mapping": MAPPING_SCHEMA,
    },
}

DEFAULT_BACKOFF = (1.0, 5.0, 30.0)
_validator: Draft202012Validator | None = None


class ConnectorError(KeelError):
    """A connector run that failed; `url` is redacted, `status` the last HTTP status if any.

    `retryable` says whether trying again later may succeed. When not given it follows `status`: a 5xx,
    429 or 408 may pass, any other answer (401, 403, 404, 422 ...) will be the same; without a status
    (a missing secret, malformed JSON, a cursor loop, a bad config) a retry cannot help either. A job
    retries only a retryable error (keel.jobs.types.retry_can_help)."""

    def __init__(self, message: str, url: str | None = None, status: int | None = None,
                 retryable: bool | None = None):
        super().__init__(message)
        self.message, self.url, self.status = message, url, status
        if retryable is None:
            retryable = status is not None and (status >= 500 or status in (408, 429))
        self.retryable = retryable

    def __str__(self) -> str:
        return f"{self.message} ({self.url})" if self.url else self.message


def validate_config(config: Any) -> list[str]:
    """Every problem of an http_json config as 'place: message' (empty when valid)."""
    global _validator
    if _validator is None:
        _validator = Draft202012Validator(HTTP_JSON_SCHEMA)
    problems = [f"{e.json_path}: {e.message}" for e in _validator.iter_errors(config)]
    if problems or not isinstance(config, Mapping):
        return sorted(problems)
    # Rendered against the data each part gets at run time (see `_items`): `vars` everywhere, `secrets`
    # only in headers and parameters; their names are known only then, so any name reads as a sample.
    plain, with_secrets = {"vars": AnyKeys()}, {"vars": AnyKeys(), "secrets": AnyKeys()}
    templates = [("$.url", config["url"], plain)]
    templates += [(f"$.headers.{k}", v, with_secrets) for k, v in config.get("headers", {}).items()]
    templates += [(f"$.params.{k}", v, with_secrets) for k, v in config.get("params", {}).items()
                  if isinstance(v, str)]
    templates += [(place, text, plain) for place, text in _string_leaves(config.get("body"), "$.body")]
    problems += [f"{place}: {p}" for place, text, sample in templates if (p := template_problem(text, sample))]
    for name, text in config.get("headers", {}).items():
        if is_sensitive_name(name) and "secrets." not in text:
            problems.append(f"$.headers.{name}: must take its value from a secret ({{{{ secrets.NAME }}}}), "
                            "never from the definition itself")
    problems += [f"$.mapping: {p}" for p in mapping_problems(config.get("mapping") or {})]
    return problems


def _string_leaves(value: Any, place: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield place, value
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _string_leaves(v, f"{place}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _string_leaves(v, f"{place}[{i}]")


def resolve_secrets(names: Sequence[str] | Mapping[str, str] | None,
                    environ: Mapping[str, str]) -> dict[str, str]:
    """{name in templates: value} from the environment. A list names variables used under their own
    name; an object maps a template name to a variable. Errors name the variable, never a value."""
    pairs = list(names.items()) if isinstance(names, Mapping) else [(n, n) for n in names or ()]
    missing = [env for _, env in pairs if not environ.get(env)]
    if missing:
        raise ConnectorError(f"environment variable not set: {', '.join(missing)} "
                             "(named in the connector's secrets)")
    return {alias: environ[env] for alias, env in pairs}


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date), None if unusable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, when.timestamp() - now)


def _with_query(url: str, params: Mapping[str, Any]) -> str:
    if not params:
        return url
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    pairs += [(k, ("true" if v else "false") if isinstance(v, bool) else str(v)) for k, v in params.items()]
    return urlunsplit(parts._replace(query=urlencode(pairs)))


def _render_body(value: Any, context: Mapping[str, Any]) -> Any:
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, Mapping):
        return {k: _render_body(v, context) for k, v in value.items()}
    if isinstance(value, list):
        return [_render_body(v, context) for v in value]
    return value


class HttpJsonSource:
    """Items of one http_json connector. `secrets` is the definition's `secrets` (environment variable
    names); `sleep` and `clock` are injectable so back-off can be tested without waiting."""

    def __init__(self, config: Mapping[str, Any], secrets: Sequence[str] | Mapping[str, str] | None,
                 client: OutboundClient, *, values: Mapping[str, Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.time,
                 environ: Mapping[str, str] | None = None):
        self.config = config
        self.secret_names = secrets
        self.client = client
        self.values = dict(values or {})
        self.sleep = sleep
        self.clock = clock
        self.environ = environ

    def iter_items(self) -> Iterator[dict[str, Any]]:
        """Every item of every page, in order. Raises ConnectorError (or a transport/template error)
        on the first failure; callers collect the items before writing anything."""
        problems = validate_config(self.config)
        if problems:  # normally caught when the definition was loaded; never run an unchecked config
            raise ConnectorError("invalid http_json config: " + "; ".join(problems))
        secrets = resolve_secrets(self.secret_names, os.environ if self.environ is None else self.environ)
        self._secret_values = list(secrets.values())
        try:
            yield from self._items(secrets)
        except KeelError as exc:
            # Backstop: a secret that reached a message through a server echo or a template error.
            if any(s and s in str(exc) for s in self._secret_values):
                raise ConnectorError(redact(str(exc), self._secret_values),
                                     retryable=bool(exc.retryable)) from None
            raise

    def _items(self, secrets: dict[str, str]) -> Iterator[dict[str, Any]]:
        cfg = self.config
        plain_ctx = {"vars": self.values}
        secret_ctx = {"vars": self.values, "secrets": secrets}
        url = render(cfg["url"], plain_ctx)
        origin = str(origin_of(url))
        headers: dict[str, str] = {}
        credentials: list[Credential] = []
        for name, template in cfg.get("headers", {}).items():
            value = render(template, secret_ctx)
            if "\r" in value or "\n" in value:
                raise ConnectorError(f"header {name} contains a line break")
            if any(s in value for s in self._secret_values):
                credentials.append(Credential(origin, name, value))
            else:
                headers[name] = value
        params = {k: render(v, secret_ctx) if isinstance(v, str) else v
                  for k, v in cfg.get("params", {}).items()}
        body = _render_body(cfg.get("body"), plain_ctx)
        index = 0
        for items in self._pages(url, headers, credentials, params, body):
            for item in items:
                if not isinstance(item, dict):
                    raise ConnectorError(f"item {index} is not a JSON object but {type(item).__name__}")
                yield item
                index += 1

    def _pages(self, url: str, headers: dict[str, str], credentials: list[Credential],
               params: dict[str, Any], body: Any) -> Iterator[list[Any]]:
        pg = self.config.get("pagination") or {"type": "none"}
        kind, size = pg["type"], pg.get("page_size")
        max_pages = pg.get("max_pages", 1000)
        short_stop = pg.get("stop_on_short_page", True)
        page = pg.get("start", 1)
        offset = pg.get("start", 0)
        cursor: Any = None
        seen_cursors: set[str] = set()
        fetched = 0
        while True:
            if fetched >= max_pages:
                raise ConnectorError(f"more than max_pages ({max_pages}) pages; raise max_pages or narrow "
                                     "the query", redact_url(url, self._secret_values))
            extra: dict[str, Any] = {}
            if kind == "page":
                extra[pg.get("page_param", "page")] = page
            elif kind == "offset":
                extra[pg.get("offset_param", "offset")] = offset
                if size:
                    extra[pg.get("limit_param", "limit")] = size
            elif kind == "cursor" and cursor is not None:
                extra[pg.get("cursor_param", "cursor")] = cursor
            if size and kind in ("page", "cursor") and pg.get("size_param"):
                extra[pg["size_param"]] = size
            if pg.get("in") == "body":
                if not isinstance(body, (Mapping, type(None))):
                    raise ConnectorError("pagination in the body needs a JSON object body")
                doc, shown = self._fetch(_with_query(url, params), headers, credentials, {**(body or {}), **extra})
            else:
                doc, shown = self._fetch(_with_query(url, {**params, **extra}), headers, credentials, body)
            fetched += 1
            items = self._item_list(doc, shown)
            log.info("page %d: %d items from %s", fetched, len(items), shown)
            yield items
            if kind == "none" or not items:
                return
            if kind in ("page", "offset") and short_stop and size and len(items) < size:
                return
            if kind == "page":
                page += 1
            elif kind == "offset":
                offset += len(items)
            else:
                nxt = parse_path(pg["next"]).lookup(doc)
                if nxt is MISSING or nxt is None or nxt == "":
                    return
                if str(nxt) in seen_cursors:
                    raise ConnectorError(f"the API returned cursor {nxt!r} twice; stopping to avoid a loop", shown)
                seen_cursors.add(str(nxt))
                cursor = nxt

    def _item_list(self, doc: Any, shown: str) -> list[Any]:
        pointer = self.config.get("items", "")
        items = parse_path(pointer).lookup(doc)
        if items is MISSING:
            raise ConnectorError(f"the response has nothing at items path {pointer!r}", shown)
        if not isinstance(items, list):
            raise ConnectorError(f"items path {pointer!r} holds {type(items).__name__}, not a list", shown)
        return items

    def _timeout(self) -> float | tuple[float, float] | None:
        t = self.config.get("timeout")
        return (t["connect"], t["read"]) if isinstance(t, Mapping) else t

    def _fetch(self, url: str, headers: dict[str, str], credentials: list[Credential],
               body: Any) -> tuple[Any, str]:
        """One page: retries on 5xx, timeouts and connection errors; waits on 429."""
        retries = self.config.get("retries", {})
        max_retries = retries.get("max", 3)
        backoff = retries.get("backoff_seconds", DEFAULT_BACKOFF)
        limits = self.config.get("rate_limit", {})
        max_waits, wait_cap = limits.get("max_waits", 5), limits.get("max_wait_seconds", 120.0)
        method = self.config.get("method", "GET")
        shown = redact_url(url, self._secret_values)
        failures = waits = 0
        while True:
            try:
                resp = self.client.request(method, url, headers=headers, json=body, credential=credentials,
                                           timeout=self._timeout(), secrets=self._secret_values)
            except (OutboundTimeout, ConnectionFailed) as exc:
                failures += 1
                if failures > max_retries:
                    raise ConnectorError(f"giving up after {failures} attempts: {exc.message}", shown,
                                         retryable=True) from None
                self._back_off(backoff, failures, exc.message, shown)
                continue
            if resp.status == 429:
                waits += 1
                if waits > max_waits:
                    raise ConnectorError(f"still rate limited (HTTP 429) after {max_waits} waits", shown, 429)
                delay = retry_after_seconds(resp.headers.get("retry-after"), self.clock())
                delay = min(wait_cap, delay if delay is not None else _backoff_at(backoff, waits))
                log.warning("rate limited (HTTP 429) by %s; waiting %.1f s", shown, delay)
                self.sleep(delay)
                continue
            if 500 <= resp.status < 600:
                failures += 1
                if failures > max_retries:
                    raise ConnectorError(f"HTTP {resp.status} after {failures} attempts: {self._snippet(resp)}",
                                         shown, resp.status)
                self._back_off(backoff, failures, f"HTTP {resp.status}", shown)
                continue
            if not 200 <= resp.status < 300:
                raise ConnectorError(f"HTTP {resp.status}: {self._snippet(resp)}", shown, resp.status)
            return self._parse(resp, shown), shown

    def _back_off(self, backoff: Sequence[float], failures: int, reason: str, shown: str) -> None:
        delay = _backoff_at(backoff, failures)
        log.warning("%s from %s; retry %d in %.1f s", redact(reason, self._secret_values), shown, failures, delay)
        self.sleep(delay)

    def _snippet(self, resp: Response) -> str:
        text = resp.body[:200].decode("utf-8", errors="replace").strip()
        return redact(text, self._secret_values) or "(empty body)"

    @staticmethod
    def _parse(resp: Response, shown: str) -> Any:
        try:
            return json.loads(resp.body)
        except json.JSONDecodeError as exc:
            raise ConnectorError(f"malformed JSON in the response: {exc.msg} at line {exc.lineno} column "
                                 f"{exc.colno} (char {exc.pos})", shown, resp.status) from None
        except UnicodeDecodeError as exc:
            raise ConnectorError(f"response is not UTF-8 JSON: {exc.reason} at byte {exc.start}",
                                 shown, resp.status) from None
        except (ValueError, RecursionError) as exc:
            raise ConnectorError(f"unusable JSON in the response: {type(exc).__name__}", shown,
                                 resp.status) from None


def _backoff_at(backoff: Sequence[float], attempt: int) -> float:
    """The wait before retry number `attempt` (1-based); the last entry repeats."""
    if not backoff:
        return 0.0
    return float(backoff[min(attempt, len(backoff)) - 1])
