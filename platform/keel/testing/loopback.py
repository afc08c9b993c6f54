"""A small threaded HTTP server on 127.0.0.1 (ephemeral port) whose replies a test scripts: status codes,
delays, slow-drip bodies and headers, redirects, Retry-After, paginated JSON. Every request it receives is
recorded, headers included, so a test can check what was (or was not) sent to it. Keel's own tests use it,
and so can a plugin's: it is the upstream API a connector is tested against.

    with LoopbackServer() as hr:
        hr.reply("/people", Reply(500), Reply(json={"items": []}))   # first a 500, then 200 (repeats)
        hr.handle("/pages", lambda req: Reply(json=...))             # computed from the request
        hr.redirect("/old", other.url("/new"))
        client = OutboundClient(allowlist=[hr.allow])                # allowlisted explicitly
"""
from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

_NO_JSON = object()


@dataclass
class Reply:
    status: int = 200
    json: Any = _NO_JSON
    body: bytes | str = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0           # seconds to wait before answering (timeouts)
    no_length: bool = False      # omit Content-Length and close: the client must read to EOF
    drip: float = 0.0            # seconds between bytes: the body trickles out one byte at a time
    drip_head: bool = False      # with `drip`, the status line and headers trickle too
    length: int | None = None    # the Content-Length to announce when it is not the body's (a promise
                                 # of more than is sent: the server closes after the body)


@dataclass
class Seen:
    """One request as the server received it; header names lower-cased."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Route = Callable[[Seen], Reply]


class _IPv6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class LoopbackServer:
    """`tls=(certfile, keyfile)` serves HTTPS; `url()` then uses `host` (the certificate's name).
    `address="::1"` listens on IPv6 loopback instead of 127.0.0.1."""

    def __init__(self, tls: tuple[str, str] | None = None, host: str | None = None,
                 address: str = "127.0.0.1") -> None:
        self.address = f"[{address}]" if ":" in address else address
        self.host, self.scheme = host or self.address, "https" if tls else "http"
        self.requests: list[Seen] = []
        self._routes: dict[str, Route] = {}
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                seen = Seen(self.command, parts.path,
                            {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
                            {k.lower(): v for k, v in self.headers.items()}, self.rfile.read(length))
                with server._lock:
                    server.requests.append(seen)
                    route = server._routes.get(parts.path)
                reply = route(seen) if route else Reply(404, body="no route")
                try:
                    self._send(reply)
                except OSError:  # the client gave up (a timeout test)
                    pass

            def _send(self, reply: Reply) -> None:
                if reply.delay:
                    time.sleep(reply.delay)
                body = reply.body.encode() if isinstance(reply.body, str) else reply.body
                headers = dict(reply.headers)
                if reply.json is not _NO_JSON:
                    body = json.dumps(reply.json, ensure_ascii=False).encode()
                    headers.setdefault("Content-Type", "application/json")
                if reply.no_length or reply.length is not None:
                    headers["Connection"] = "close"
                    self.close_connection = True
                if not reply.no_length:
                    headers["Content-Length"] = str(len(body) if reply.length is None else reply.length)
                if reply.drip and reply.drip_head:
                    lines = [f"HTTP/1.1 {reply.status} {self.responses[reply.status][0]}",
                             *(f"{k}: {v}" for k, v in headers.items())]
                    body = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
                else:
                    self.send_response(reply.status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                if not reply.drip:
                    self.wfile.write(body)
                    return
                self.wfile.flush()
                for i in range(len(body)):  # ends by itself: at most len(body) * drip seconds
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(reply.drip)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        server_class = _IPv6Server if ":" in address else ThreadingHTTPServer
        self._httpd = server_class((address, 0), Handler)
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.01},
                                        daemon=True)

    # scripting --------------------------------------------------------------------------------------
    def handle(self, path: str, route: Route) -> None:
        with self._lock:
            self._routes[path] = route

    def reply(self, path: str, *replies: Reply) -> None:
        """Answer requests to `path` with these replies in turn; the last one repeats."""
        queue = list(replies)

        def route(_: Seen) -> Reply:
            return queue.pop(0) if len(queue) > 1 else queue[0]

        self.handle(path, route)

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.reply(path, Reply(status, headers={"Location": location}))

    def seen(self, path: str) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # addresses --------------------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def allow(self) -> str:
        """The allowlist entry for this server (this port only)."""
        return f"{self.address}:{self.port}"

    def url(self, path: str = "/") -> str:
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    # lifecycle --------------------------------------------------------------------------------------
    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
