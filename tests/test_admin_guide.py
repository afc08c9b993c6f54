"""docs/admin.md, run as written: every `keel` command and every `curl` call of its shell blocks, in
order, against a fresh instance (the CLI in-process, the API through the Flask test client). A `# → `
line after a call names the expected status and a piece of the answer. So a new admin following the
guide gets exactly what it says."""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from click.testing import CliRunner

from keel.cli import cli

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "docs" / "admin.md"
CURL = re.compile(r"^curl\s")
ASSIGN = re.compile(r"^(\w+)=\$\((.*)\)$")


def shell_blocks(text: str) -> list[list[str]]:
    """Each ```sh block as its logical lines (backslash continuations joined)."""
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [[line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
            for block in blocks]


def curl_request(line: str, variables: dict[str, str]) -> tuple[str, str, dict, bytes | None]:
    words = shlex.split(line)
    method, headers, data, url = "GET", {}, None, None
    i = 1
    while i < len(words):
        w = words[i]
        if w == "-s":
            i += 1
            continue
        if w == "-X":
            method = words[i + 1]
        elif w == "-H":
            name, _, value = words[i + 1].partition(":")
            headers[name.strip()] = re.sub(r"\$(\w+)", lambda m: variables[m.group(1)], value.strip())
        elif w == "-d":
            data = words[i + 1].encode()
        else:
            url = w
            i += 1
            continue
        i += 2
    path = re.sub(r"^https?://[^/]+", "", url)
    return method, path, headers, data


def test_the_admin_guide_works_as_written(tmp_path, monkeypatch, sqlite_url):
    from keel import create_app

    monkeypatch.chdir(ROOT)  # the guide's paths are relative to the repository
    env = {"KEEL_INSTANCE_PATH": str(tmp_path / "inst"), "KEEL_DATABASE_URL": sqlite_url,
           "KEEL_ENV": "development", "KEEL_APPS_PATH": str(tmp_path / "none")}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("KEEL_REDIS_URL", raising=False)
    runner = CliRunner()
    variables: dict[str, str] = {}
    app = None
    last = None
    ran = {"keel": 0, "curl": 0, "checked": 0}
    export_dir = tmp_path / "export"

    for block in shell_blocks(GUIDE.read_text(encoding="utf-8")):
        for line in block:
            assign = ASSIGN.match(line)
            command = assign.group(2) if assign else line
            if command.startswith("keel "):
                args = shlex.split(command)[1:]
                if args[:2] == ["app", "export"]:
                    args[3] = str(export_dir / args[3])
                r = runner.invoke(cli, args, catch_exceptions=False)
                assert r.exit_code == 0, (line, r.output)
                ran["keel"] += 1
                if assign:
                    variables[assign.group(1)] = r.output.strip().splitlines()[-1]
            elif CURL.match(command):
                if app is None:
                    app = create_app({**env, "TESTING": True})
                method, path, headers, data = curl_request(command, variables)
                last = app.test_client().open(path, method=method, headers=headers, data=data)
                ran["curl"] += 1
            elif command.startswith("# → "):
                status, _, fragment = command[4:].partition(" ")
                body = last.get_data(as_text=True)
                assert last.status_code == int(status), (line, body)
                compact = json.dumps(last.get_json(), ensure_ascii=False, separators=(",", ":")) \
                    if last.is_json else body
                assert fragment in compact, (line, compact)
                ran["checked"] += 1
            else:
                raise AssertionError(f"the test does not know how to run: {line}")
    assert ran["keel"] >= 14 and ran["curl"] >= 10 and ran["checked"] == ran["curl"]
    # the export wrote the current version back to files that validate and equal what is applied
    assert (export_dir / "leave-current" / "app.json").is_file()
    r = runner.invoke(cli, ["app", "diff", str(export_dir / "leave-current")], catch_exceptions=False)
    assert r.exit_code == 0 and "no changes" in r.output, r.output
    app.extensions["keel"].engine.dispose()
