"""What the source itself must not hold (docs/security.md, "Secrets", "Stored XSS", "Sign-in"): no key
or credential in any tracked file beyond the reviewed demo/test values; no absolute link built from the
request's Host or Origin (links come from KEEL_BASE_URL); no HTML marked safe except at the reviewed
places, whose text was sanitised when it was written. A new occurrence fails until someone reviews it."""
from __future__ import annotations

import re
import subprocess

from conftest import REPO

# Values that look like secrets and are not: each documented where it is defined.
REVIEWED_VALUES = {
    'DEMO_PASSWORD = "keel-demo-2025"',           # keel demo's users, printed by `keel demo`
    'PASSWORD = "a-Long-pass-phrase-42"',         # keel.testing: throwaway instances for plugin tests
    'PASSWORD = "bench-password-2025"',           # bench/bench_workbench.py: a throwaway benchmark instance
}
SECRET_PATTERNS = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----"                      # PEM private keys
    r"|AKIA[0-9A-Z]{16}|ghp_[A-Za-z0-9]{36}|xox[abpr]-[A-Za-z0-9-]{10,}|sk-[A-Za-z0-9]{32,}"  # cloud/chat tokens
    r"|\b[A-Za-z_]*(?i:secret|password|passwd|token|api_key)[A-Za-z_]*\s*[=:]\s*['\"][^'\"\s{}$<]{8,}['\"]")  # assigned
ALLOWED_MARKUP = {
    ("platform/keel/web/pages.py", "Markup(value)"),               # rich text, nh3-sanitised on write
    ("platform/keel/web/inbox_pages.py", 'Markup(item["body"])'),  # bodies rendered once, nh3-limited
    ("platform/keel/formats.py", 'Markup(escape("" if value is None else str(value)'),  # escaped first
    ("platform/keel/formats.py", 'Markup(\'<time datetime="{}" title="{}">{}</time>\')'),  # .format escapes
}
REQUEST_HOST = re.compile(r"request\.(host|host_url|url_root|root_url|base_url)\b|_external\s*=\s*True"
                          r"|headers(?:\.get\(|\[)['\"](?:Host|Origin|X-Forwarded-Host)['\"]")


def _tracked(*patterns: str) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z", *patterns], cwd=REPO, capture_output=True, check=True)
    return [p for p in out.stdout.decode().split("\0") if p and (REPO / p).is_file()]


def _text(path: str) -> str | None:
    data = (REPO / path).read_bytes()
    return None if b"\0" in data[:4096] else data.decode("utf-8", "replace")


def test_no_secret_in_any_tracked_file():
    found = []
    for path in _tracked():
        if path.startswith("tests/"):
            continue  # test passwords and fake tokens are the point of the tests
        text = _text(path)
        for m in SECRET_PATTERNS.finditer(text or ""):
            line = text[text.rfind("\n", 0, m.start()) + 1:text.find("\n", m.end())].strip()
            if not any(v in line for v in REVIEWED_VALUES):
                found.append(f"{path}: {line[:120]}")
    assert not found, "possible secrets in the repository:\n" + "\n".join(found)


def test_the_secret_scan_finds_what_it_is_for():
    for leak in ('KEEL_SECRET_KEY = "f3a9c0d1e2b4a6c8"', "-----BEGIN RSA PRIVATE KEY-----",
                 'db_password: "hunter2hunter2"', "AKIAABCDEFGHIJKLMNOP"):
        assert SECRET_PATTERNS.search(leak), leak
    for fine in ('KEEL_SECRET_KEY = os.environ["KEEL_SECRET_KEY"]', 'password = "{{ secrets.pw }}"',
                 'token: "${HR_TOKEN}"'):
        assert not SECRET_PATTERNS.search(fine), fine


def test_no_env_or_key_files_are_tracked():
    bad = [p for p in _tracked() if re.search(r"(^|/)(\.env(\..*)?|id_rsa|id_ed25519|.*\.pem|.*\.key|secret_key)$", p)]
    assert not bad, bad


def test_no_link_is_built_from_the_request_host():
    found = [f"{p}: {m.group(0)}" for p in _tracked("platform", "plugins") if p.endswith(".py")
             for m in REQUEST_HOST.finditer(_text(p) or "")]
    assert not found, "absolute links must come from KEEL_BASE_URL, never the request:\n" + "\n".join(found)


def test_html_is_marked_safe_only_at_the_reviewed_places():
    found = set()
    for p in _tracked("platform", "plugins"):
        text = _text(p) or ""
        if p.endswith(".py"):
            found |= {(p, m.group(0)) for m in re.finditer(r"Markup\([^)]*\)", text)}
        elif p.endswith((".html", ".jinja", ".j2")):
            found |= {(p, m.group(0)) for m in re.finditer(r"\|\s*safe\b|autoescape\s+false", text)}
    assert found <= ALLOWED_MARKUP, f"unreviewed HTML marked safe: {sorted(found - ALLOWED_MARKUP)}"


def test_every_test_named_in_the_security_coverage_map_exists():
    """docs/security.md "Tested against" names tests as `file.py::test` (then `::test` for the same
    file): a renamed or deleted test fails here instead of leaving the map pointing at nothing."""
    section = (REPO / "docs" / "security.md").read_text(encoding="utf-8").split("## Tested against", 1)[1]
    section = section.split("\n## ", 1)[0]
    named, missing = 0, []
    for line in section.splitlines():
        current = None
        for m in re.finditer(r"(test_[a-z0-9_]+\.py)(?:::(test_[a-z0-9_]+))?|::(test_[a-z0-9_]+)", line):
            if m.group(1):
                current = m.group(1)
                if not (REPO / "tests" / current).is_file():
                    missing.append(current)
                    continue
            name = m.group(2) or m.group(3)
            if name is None:
                continue
            named += 1
            if current is None or not re.search(rf"^def {name}\(", (REPO / "tests" / current).read_text(
                    encoding="utf-8"), re.MULTILINE):
                missing.append(f"{current}::{name}")
    assert named >= 60
    assert not missing, missing
