"""The outbound transport against real HTTP servers on 127.0.0.1, and the SSRF matrix of docs/security.md.

No test sends traffic off this machine: non-loopback destinations are reached only through an injected
resolver, and must be refused before any connection is attempted."""
from __future__ import annotations

import ipaddress
import logging
import socket
import time

import pytest

from keel.outbound import (
    ConnectionFailed,
    Credential,
    DestinationRefused,
    InvalidURL,
    OutboundClient,
    OutboundError,
    OutboundTimeout,
    ResponseTooLarge,
    TooManyRedirects,
    redact_url,
    refusal_reason,
)
from loopback import LoopbackServer, Reply


@pytest.fixture
def server():
    with LoopbackServer() as s:
        yield s


@pytest.fixture
def other():
    with LoopbackServer() as s:
        yield s


def resolver(table: dict[str, list[str]], calls: list[str] | None = None):
    """A getaddrinfo stand-in: `host -> addresses`; unknown names do not resolve."""
    def resolve(host, port, *args, **kwargs):
        if calls is not None:
            calls.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in table[host]]
    return resolve


def rebinding_resolver(*answers: list[str], calls: list[str]):
    """A getaddrinfo stand-in whose nth lookup answers answers[n], whatever the name (DNS rebinding)."""
    pending = iter(answers)

    def resolve(host, port, *args, **kwargs):
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port)) for a in next(pending)]
    return resolve


def test_allowlisted_loopback_server_is_reached(server):
    server.reply("/hello", Reply(json={"ok": True}, headers={"X-Trace": "1"}))
    resp = OutboundClient(allowlist=[server.allow]).request("GET", server.url("/hello?a=1"))
    assert resp.status == 200 and resp.body == b'{"ok": true}'
    assert resp.headers["x-trace"] == "1" and resp.headers["X-TRACE"] == "1"
    assert server.requests[0].query == {"a": "1"}


@pytest.mark.parametrize("url", [
    "http://0.0.0.0/", "http://[::]/", "http://2130706433/", "http://0x7f000001/", "http://017700000001/",
    "http://127.1/", "http://127.0.0.1/", "http://[::1]/", "http://[::ffff:127.0.0.1]/", "http://localhost./",
])
def test_loopback_and_unspecified_destinations_are_refused(url):
    client = OutboundClient(resolve=resolver({"localhost": ["127.0.0.1"]}))
    with pytest.raises(DestinationRefused, match="refused unless an administrator allowlists it"):
        client.request("GET", url)


def test_not_allowlisted_loopback_server_is_refused_and_never_contacted(server):
    with pytest.raises(DestinationRefused, match="loopback"):
        OutboundClient().request("GET", server.url("/"))
    assert server.requests == []


@pytest.mark.parametrize("address, reason", [
    ("169.254.169.254", "link-local"), ("10.0.0.1", "private"), ("192.168.1.5", "private"),
    ("100.64.0.1", "non-public"), ("::ffff:169.254.169.254", "link-local"), ("fd00::1", "private"),
    ("224.0.0.1", "multicast"), ("64:ff9b::a00:1", "private"), ("2002:a00:1::", "private"),
])
def test_names_resolving_to_internal_addresses_are_refused(address, reason):
    calls: list[str] = []
    client = OutboundClient(resolve=resolver({"api.example.test": [address]}, calls))
    with pytest.raises(DestinationRefused, match=reason):
        client.request("GET", "https://api.example.test/v1")
    assert calls == ["api.example.test"]


def test_one_internal_address_among_public_ones_refuses_the_name():
    client = OutboundClient(resolve=resolver({"mixed.test": ["93.184.216.34", "10.0.0.1"]}))
    with pytest.raises(DestinationRefused, match="10.0.0.1"):
        client.request("GET", "http://mixed.test/")


def test_public_addresses_pass_the_check_without_connecting():
    assert refusal_reason(ipaddress.ip_address("93.184.216.34")) is None
    assert refusal_reason(ipaddress.ip_address("2606:4700::1111")) is None
    client = OutboundClient(resolve=resolver({"example.test": ["93.184.216.34"]}))
    assert client.policy.addresses("example.test", 443) == ["93.184.216.34"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.test/x", "gopher://example.test/",
                                 "javascript:alert(1)", "/relative"])
def test_only_http_and_https(url):
    with pytest.raises(DestinationRefused, match="only http and https"):
        OutboundClient().request("GET", url)


def test_user_info_in_url_is_refused(server):
    with pytest.raises(InvalidURL, match="credentials in the URL"):
        OutboundClient(allowlist=[server.allow]).request("GET", f"http://u:p@127.0.0.1:{server.port}/")
    assert server.requests == []


def test_resolved_once_and_connected_to_the_checked_address(server):
    """DNS rebinding: a second lookup would answer 10.0.0.1; there is no second lookup."""
    calls: list[str] = []
    rebinding = rebinding_resolver(["127.0.0.1"], ["10.0.0.1"], calls=calls)
    server.reply("/", Reply(body="ok"))
    client = OutboundClient(allowlist=[server.allow], resolve=rebinding)
    resp = client.request("GET", f"http://rebind.test:{server.port}/", headers={"Host": "internal.test"})
    assert resp.body == b"ok" and calls == ["rebind.test"]
    assert server.requests[0].headers["host"] == f"rebind.test:{server.port}"


def test_allowlist_by_hostname_and_by_cidr(server):
    server.reply("/", Reply(body="ok"))
    by_name = OutboundClient(allowlist=[f"hr.test:{server.port}"],
                             resolve=resolver({"hr.test": ["127.0.0.1"], "crm.test": ["127.0.0.1"]}))
    assert by_name.request("GET", f"http://HR.test:{server.port}/").status == 200
    with pytest.raises(DestinationRefused):
        by_name.request("GET", f"http://crm.test:{server.port}/")
    assert OutboundClient(allowlist=["127.0.0.0/8"]).request("GET", server.url()).status == 200
    with pytest.raises(OutboundError, match="invalid allowlist entry"):
        OutboundClient(allowlist=["hr.test:notaport"])


def test_redirect_to_non_allowlisted_port_is_refused(server, other):
    server.redirect("/start", other.url("/internal"))
    with pytest.raises(DestinationRefused, match=f"127.0.0.1:{other.port}"):
        OutboundClient(allowlist=[server.allow]).request("GET", server.url("/start"))
    assert other.requests == []


def test_redirect_to_file_url_is_refused(server):
    server.redirect("/start", "file:///etc/passwd")
    with pytest.raises(DestinationRefused, match="only http and https"):
        OutboundClient(allowlist=[server.allow]).request("GET", server.url("/start"))


def test_credential_is_dropped_on_cross_origin_redirect(server, other):
    server.redirect("/start", other.url("/landing"))
    other.reply("/landing", Reply(body="landed"))
    cred = Credential(origin=server.url(""), header="Authorization", value="Bearer s3cret-token")
    client = OutboundClient(allowlist=[server.allow, other.allow])
    resp = client.request("GET", server.url("/start"), credential=cred,
                          headers={"Cookie": "sid=abc", "X-Api-Key": "k-123", "Accept": "application/json"})
    assert resp.body == b"landed" and resp.url == other.url("/landing")
    assert server.requests[0].headers["authorization"] == "Bearer s3cret-token"
    received = other.requests[0].headers
    assert "authorization" not in received and "cookie" not in received and "x-api-key" not in received
    assert received["accept"] == "application/json"


def test_credential_kept_on_same_origin_redirect_and_never_sent_to_its_non_origin(server, other):
    server.redirect("/start", "/next")
    server.reply("/next", Reply(body="here"))
    cred = Credential(origin=server.url(""), header="Authorization", value="Bearer t")
    client = OutboundClient(allowlist=[server.allow, other.allow])
    assert client.request("GET", server.url("/start"), credential=cred).body == b"here"
    assert server.seen("/next")[0].headers["authorization"] == "Bearer t"
    other.reply("/", Reply())
    client.request("GET", other.url("/"), credential=cred)
    assert "authorization" not in other.requests[0].headers


def test_post_becomes_get_after_303(server):
    server.redirect("/submit", "/done", status=303)
    server.reply("/done", Reply(body="done"))
    OutboundClient(allowlist=[server.allow]).request("POST", server.url("/submit"), json={"a": 1})
    first, second = server.requests
    assert first.method == "POST" and first.json() == {"a": 1}
    assert second.method == "GET" and second.body == b""


def test_redirect_loop_stops(server):
    server.redirect("/loop", "/loop")
    with pytest.raises(TooManyRedirects, match="more than 3 redirects"):
        OutboundClient(allowlist=[server.allow], max_redirects=3).request("GET", server.url("/loop"))
    assert len(server.requests) == 4


@pytest.mark.parametrize("no_length", [False, True])
def test_response_body_is_capped(server, no_length):
    server.reply("/big", Reply(body=b"x" * 5000, no_length=no_length))
    with pytest.raises(ResponseTooLarge, match="limit of 1000"):
        OutboundClient(allowlist=[server.allow], max_bytes=1000).request("GET", server.url("/big"))


def test_read_timeout(server):
    # The server would answer after a minute; the client gives up after 0.2 s. The gap between the two
    # is the margin for a busy machine.
    server.reply("/slow", Reply(body="late", delay=60.0))
    started = time.monotonic()
    with pytest.raises(OutboundTimeout, match="no response within 0.2 s"):
        OutboundClient(allowlist=[server.allow], timeout=(1, 0.2)).request("GET", server.url("/slow"))
    assert time.monotonic() - started < 30


def test_connection_refused_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionFailed, match="could not connect"):
        OutboundClient(allowlist=[f"127.0.0.1:{port}"]).request("GET", f"http://127.0.0.1:{port}/")


def test_unresolvable_name_is_a_connection_error():
    with pytest.raises(ConnectionFailed, match="could not resolve host 'nowhere.test'"):
        OutboundClient(resolve=resolver({})).request("GET", "http://nowhere.test/")


def test_secrets_never_logged(server, other, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, httpcore's included
    server.redirect("/start", other.url("/x?token=tok-999"))
    other.reply("/x", Reply(body="ok"))
    cred = Credential(origin=server.url(""), header="X-Custom", value="very-secret-value")
    OutboundClient(allowlist=[server.allow, other.allow]).request(
        "GET", server.url("/start?api_key=k-555&q=very-secret-value"), credential=cred,
        headers={"Authorization": "Bearer abc-777"})
    text = caplog.text
    assert "/start" in text and "-> 302" in text  # the log is there ...
    for secret in ("very-secret-value", "k-555", "tok-999", "abc-777"):
        assert secret not in text                  # ... without a single secret
    assert "very-secret-value" not in repr(cred)


def test_redact_url():
    assert redact_url("https://u:p@h.test/a?token=1&page=2") == "https://h.test/a?token=***&page=2"
    assert redact_url("https://h.test/a?q=s%2F1", secrets=["s/1"]) == "https://h.test/a?q=***"


# -- HTTPS: connect to the checked address, verify the certificate for the hostname ------------------------

@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A throw-away CA and a certificate for hr.test, made with the openssl command line tool."""
    import shutil
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("openssl command not available")
    d = tmp_path_factory.mktemp("tls")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

    def run(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)

    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=Keel Test CA",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign")
    run("req", *ec, "-keyout", "hr.key", "-out", "hr.csr", "-subj", "/CN=hr.test")
    (d / "ext.cnf").write_text("subjectAltName=DNS:hr.test\n")
    run("x509", "-req", "-in", "hr.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "hr.pem", "-days", "1", "-extfile", "ext.cnf")
    return d


def test_https_connects_to_checked_address_and_verifies_the_hostname(tls_files):
    import ssl

    context = ssl.create_default_context(cafile=str(tls_files / "ca.pem"))
    with LoopbackServer(tls=(str(tls_files / "hr.pem"), str(tls_files / "hr.key")), host="hr.test") as hr:
        hr.reply("/", Reply(body="secure"))
        names = resolver({"hr.test": ["127.0.0.1"], "crm.test": ["127.0.0.1"]})
        client = OutboundClient(allowlist=[f"127.0.0.1:{hr.port}"], resolve=names, ssl_context=context)
        assert client.request("GET", hr.url("/")).body == b"secure"
        assert hr.requests[0].headers["host"] == f"hr.test:{hr.port}"
        # Same address, another name: the certificate does not match it, so no request is made.
        with pytest.raises(ConnectionFailed, match="certificate verify failed"):
            client.request("GET", f"https://crm.test:{hr.port}/")
        assert len(hr.requests) == 1


# -- total_timeout: one deadline for the whole exchange, reads included -------------------------------------

DRIP = 0.05          # the server sends one byte every 50 ms: each read succeeds well within the read timeout
DRIP_BYTES = 1200    # so a client without a deadline stays for DRIP * DRIP_BYTES = 60 s


@pytest.mark.parametrize("reply", [
    Reply(body=b"x" * DRIP_BYTES, drip=DRIP),                                  # a slow body
    Reply(body=b"x" * DRIP_BYTES, drip=DRIP, length=10 * 1024 * 1024),        # that promises 10 MB
    Reply(body=b"x" * DRIP_BYTES, drip=DRIP, no_length=True),                 # read to EOF
    Reply(body=b"x" * DRIP_BYTES, drip=DRIP, drip_head=True,                  # slow headers
          headers={"X-Padding": "p" * DRIP_BYTES}),
], ids=["body", "long-promise", "until-close", "headers"])
def test_total_timeout_ends_a_slow_drip_response(server, reply):
    server.reply("/drip", reply)
    client = OutboundClient(allowlist=[server.allow], timeout=(2, 2), total_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(OutboundTimeout, match="not complete after 1 s"):
        client.request("GET", server.url("/drip"))
    # The deadline is 1 s; the server would go on for 60 s. The margin is for a busy machine.
    assert time.monotonic() - started < 30


def test_total_timeout_covers_every_redirect_hop(server):
    server.reply("/a", Reply(302, headers={"Location": "/b"}, delay=0.6))
    server.reply("/b", Reply(302, headers={"Location": "/c"}, delay=0.6))
    server.reply("/c", Reply(body="late", delay=0.6))
    client = OutboundClient(allowlist=[server.allow], timeout=(2, 2), total_timeout=1.0)
    with pytest.raises(OutboundTimeout, match="not complete after 1 s"):
        client.request("GET", server.url("/a"))
    assert server.seen("/c") == []


# -- what the httpcore network layer could break -------------------------------------------------------------

@pytest.mark.parametrize("url, reason", [
    ("http://[::ffff:7f00:1]/", "loopback"),                       # IPv4-mapped, hex
    ("http://[0:0:0:0:0:ffff:127.0.0.1]/", "loopback"),            # IPv4-mapped, long form
    ("http://[::FFFF:127.0.0.1]:8080/", "loopback"),
    ("http://[0000:0000::0001]/", "loopback"),
    ("http://[::ffff:a9fe:a9fe]/", "link-local"),                  # 169.254.169.254
    ("http://[fe80::1%25eth0]/", "link-local"),                    # with a zone id
    ("http://[::127.0.0.1]/", "reserved"),                         # IPv4-compatible (deprecated)
    ("http://[::ffff:0.0.0.0]/", "unspecified"),
    ("http://[64:ff9b::7f00:1]/", "loopback"),                     # NAT64
    ("http://[2002:7f00:1::]/", "loopback"),                       # 6to4
    ("http://[2001:0:4136:e378:8000:63bf:80ff:fffe]/", "loopback"),  # Teredo, client 127.0.0.1
])
def test_ipv6_literal_spellings_of_internal_addresses_are_refused(url, reason):
    with pytest.raises(DestinationRefused, match=reason):
        OutboundClient(resolve=resolver({})).request("GET", url)


def test_an_allowlisted_ipv6_server_gets_a_bracketed_host_header():
    try:
        server = LoopbackServer(address="::1")
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    with server:
        server.reply("/", Reply(body="v6"))
        with pytest.raises(DestinationRefused, match="loopback"):
            OutboundClient().request("GET", server.url("/"))
        assert OutboundClient(allowlist=[server.allow]).request("GET", server.url("/")).body == b"v6"
        assert server.requests[0].headers["host"] == f"[::1]:{server.port}"


def test_a_name_is_resolved_and_checked_again_at_every_connection(server):
    """Rebinding between two hops: the redirect's connection resolves anew and is refused."""
    calls: list[str] = []
    rebinding = rebinding_resolver(["127.0.0.1"], ["10.0.0.1"], calls=calls)
    server.redirect("/start", f"http://rebind.test:{server.port}/next")
    server.reply("/next", Reply(body="internal"))
    client = OutboundClient(allowlist=[server.allow], resolve=rebinding)
    with pytest.raises(DestinationRefused, match=r"private address \(10.0.0.1\)"):
        client.request("GET", f"http://rebind.test:{server.port}/start")
    assert calls == ["rebind.test", "rebind.test"] and server.seen("/next") == []


def test_the_check_is_in_the_network_layer_itself(server):
    """Whatever builds the request, a connection opened through GuardedBackend is checked."""
    import httpcore

    from keel.outbound import AddressPolicy
    from keel.outbound.network import Deadline, GuardedBackend

    backend = GuardedBackend(AddressPolicy(), Deadline(5), shown="test")
    with httpcore.ConnectionPool(network_backend=backend) as pool:
        with pytest.raises(DestinationRefused, match="loopback"):
            pool.request("GET", server.url("/"))
    assert server.requests == []


def test_proxy_environment_variables_are_ignored(server, other, monkeypatch):
    """A proxy would be the only address checked; the client never uses one."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, other.url(""))
    monkeypatch.setenv("NO_PROXY", "")
    server.reply("/", Reply(body="direct"))
    assert OutboundClient(allowlist=[server.allow, other.allow]).request("GET", server.url("/")).body == b"direct"
    with pytest.raises(DestinationRefused):
        OutboundClient(allowlist=[other.allow]).request("GET", server.url("/"))
    assert other.requests == [] and len(server.requests) == 1


def test_the_client_frames_the_body_whatever_the_caller_says(server):
    """A caller's Content-Length or Transfer-Encoding would frame the body differently from what is sent
    (request smuggling); a caller's Host would name another host than the one checked."""
    server.reply("/in", Reply(body="ok"))
    OutboundClient(allowlist=[server.allow]).request(
        "POST", server.url("/in"), json={"a": 1},
        headers={"Content-Length": "0", "Transfer-Encoding": "chunked", "Host": "internal.test"})
    seen = server.requests[0]
    assert seen.json() == {"a": 1} and seen.headers["content-length"] == str(len(seen.body))
    assert "transfer-encoding" not in seen.headers and seen.headers["host"] == f"127.0.0.1:{server.port}"


@pytest.mark.parametrize("value", ["a\r\nX-Injected: 1", "a\nb", "a\x00b", "中文"])
def test_a_header_value_that_would_split_or_garble_the_request_is_not_sent(server, value):
    with pytest.raises(OutboundError, match="invalid request"):
        OutboundClient(allowlist=[server.allow]).request("GET", server.url("/"), headers={"X-Note": value})
    assert server.requests == []


def test_a_path_with_spaces_and_chinese_is_percent_encoded(server):
    from urllib.parse import quote

    server.reply(quote("/人员 列表"), Reply(body="ok"))
    resp = OutboundClient(allowlist=[server.allow]).request("GET", server.url("/人员 列表?部门=销售 一部"))
    assert resp.body == b"ok"
    assert server.requests[0].query == {"部门": "销售 一部"}


def test_a_response_with_conflicting_lengths_is_refused(server):
    """Two Content-Length values: a parser that picks one is how response smuggling starts."""
    server.reply("/", Reply(body="hello", headers={"content-length": "3"}))
    with pytest.raises(ConnectionFailed, match="connection failed: RemoteProtocolError"):
        OutboundClient(allowlist=[server.allow]).request("GET", server.url("/"))
