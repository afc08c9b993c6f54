"""The `keel` command: help, validate/apply/diff/history/rollback, users and tokens, the demo, serving,
and errors printed without a traceback."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from conftest import APPS, REPO
from helpers_timing import wait_until
from keel.cli import cli

DEMO = APPS / "goal_agility"


@pytest.fixture
def env(tmp_path):
    return {"KEEL_INSTANCE_PATH": str(tmp_path / "inst"), "KEEL_DATABASE_URL": f"sqlite:///{tmp_path / 'k.db'}",
            "KEEL_APPS_PATH": str(APPS), "KEEL_ENV": "development"}


def run(env, *args, input=None):
    return CliRunner().invoke(cli, list(args), env=env, input=input, catch_exceptions=False)


def keel(env, *args, timeout=180):
    """The real console entry point in a subprocess, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "keel.cli", *args], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_every_command_has_help(env):
    for args in (["--help"], ["init", "--help"], ["serve", "--help"], ["demo", "--help"],
                 ["app", "--help"], ["app", "validate", "--help"], ["app", "apply", "--help"],
                 ["app", "diff", "--help"], ["app", "history", "--help"], ["app", "rollback", "--help"],
                 ["user", "add", "--help"], ["user", "token", "--help"]):
        r = run(env, *args)
        assert r.exit_code == 0, (args, r.output)
        assert "Usage:" in r.output
    assert "--port" in run(env, "serve", "--help").output
    assert "--host" in run(env, "demo", "--help").output


def test_validate_demo_definition_is_ok(env):
    r = run(env, "app", "validate", str(DEMO))
    assert r.exit_code == 0
    assert r.output.startswith("ok: app 'goal_agility'")


def test_validate_reports_every_error_with_file_and_pointer(env, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(DEMO, bad)
    goal = json.loads((bad / "entities" / "goal.json").read_text())
    goal["fields"][0]["type"] = "no_such_type"
    (bad / "entities" / "goal.json").write_text(json.dumps(goal))
    (bad / "entities" / "task.json").write_text('{"id": "task", "fields": [}')
    p = keel(env, "app", "validate", str(bad))
    assert p.returncode == 1
    assert "Traceback" not in p.stderr + p.stdout
    lines = p.stderr.splitlines()
    assert any(line.startswith("entities/goal.json: /fields/0/type:") and "no_such_type" in line for line in lines)
    assert any(line.startswith("entities/task.json:") and "line 1" in line and "column" in line for line in lines)


@pytest.mark.parametrize("encoding, message", [
    ("klingon", "unknown encoding 'klingon'"),
    ("rot13", "'rot13' is not a character encoding"),  # a codec, but bytes-to-bytes: LookupError on read
])
def test_validate_refuses_a_file_connector_encoding_that_cannot_decode_text(env, tmp_path, encoding, message):
    bad = tmp_path / "bad"
    shutil.copytree(DEMO, bad)
    path = bad / "connectors" / "hr_directory.json"
    connector = json.loads(path.read_text())
    connector["config"]["encoding"] = encoding
    path.write_text(json.dumps(connector))
    p = keel(env, "app", "validate", str(bad))
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert f"connectors/hr_directory.json: /config/encoding: {message}" in p.stderr.splitlines()


def test_apply_diff_history_rollback(env, tmp_path):
    r = run(env, "app", "apply", str(DEMO), "--note", "first")
    assert r.exit_code == 0, r.output
    assert "version 1" in r.output
    assert "unchanged" in run(env, "app", "apply", str(DEMO)).output

    v2 = tmp_path / "v2"
    shutil.copytree(DEMO, v2)
    task = json.loads((v2 / "entities" / "task.json").read_text())
    task["fields"].append({"id": "effort_points", "type": "integer", "label": {"zh": "点数", "en": "Points"}})
    (v2 / "entities" / "task.json").write_text(json.dumps(task))
    diff = run(env, "app", "diff", str(v2))
    assert diff.exit_code == 0 and "effort_points" in diff.output
    assert "version 2" in run(env, "app", "apply", str(v2)).output

    hist = run(env, "app", "history", "goal_agility")
    assert hist.exit_code == 0
    assert "v1" in hist.output and "v2" in hist.output and "first" in hist.output

    rb = run(env, "app", "rollback", "goal_agility", "1")
    assert rb.exit_code == 0 and "version 3" in rb.output
    engine = sa.create_engine(env["KEEL_DATABASE_URL"])
    with engine.connect() as c:
        cols = {col["name"] for col in sa.inspect(c).get_columns("goal_agility__task")}
        audit = c.exec_driver_sql("SELECT action, detail FROM keel_audit_events WHERE action LIKE 'app.%'").all()
    engine.dispose()
    assert "effort_points" in cols  # retired, not dropped: the data is kept
    assert [a for a, _ in audit].count("app.apply") >= 2 and "app.rollback" in [a for a, _ in audit]


def test_rollback_to_unknown_version_is_a_clear_error(env):
    run(env, "app", "apply", str(DEMO))
    p = keel(env, "app", "rollback", "goal_agility", "99")
    assert p.returncode == 1
    assert "error:" in p.stderr and "Traceback" not in p.stderr


def test_user_add_and_token_authenticate_the_api(env):
    run(env, "init")
    r = run(env, "user", "add", "mei", "--name", "Mei", "--password", "a-long-password", "--role", "employee")
    assert r.exit_code == 0, r.output
    tok = run(env, "user", "token", "mei")
    assert tok.exit_code == 0
    token = tok.output.strip().splitlines()[-1]
    from keel import create_app

    app = create_app({"KEEL_INSTANCE_PATH": env["KEEL_INSTANCE_PATH"], "KEEL_DATABASE_URL": env["KEEL_DATABASE_URL"]})
    me = app.test_client().get("/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json["username"] == "mei"
    with app.extensions["keel"].engine.connect() as c:
        stored = c.exec_driver_sql("SELECT token_hash FROM keel_api_tokens").scalars().all()
    assert token not in stored


def test_user_add_duplicate_and_unknown_manager_fail_cleanly(env):
    run(env, "init")
    assert run(env, "user", "add", "mei", "--password", "a-long-password").exit_code == 0
    dup = keel(env, "user", "add", "mei", "--password", "a-long-password")
    assert dup.returncode == 1 and "Traceback" not in dup.stderr and "mei" in dup.stderr
    boss = keel(env, "user", "add", "kai", "--password", "a-long-password", "--manager", "nobody")
    assert boss.returncode == 1 and "nobody" in boss.stderr
    assert keel(env, "user", "token", "ghost").returncode == 1


def test_demo_creates_the_case_once(env):
    first = run(env, "demo", "--no-serve")
    assert first.exit_code == 0, first.output
    assert "cro" in first.output and "keel-demo-2025" in first.output
    again = run(env, "demo", "--no-serve")
    assert again.exit_code == 0
    engine = sa.create_engine(env["KEEL_DATABASE_URL"])
    with engine.connect() as c:
        people = c.exec_driver_sql("SELECT count(*) FROM keel_users").scalar()
        goals = c.exec_driver_sql("SELECT title, target, metric FROM goal_agility__goal").all()
        versions = c.exec_driver_sql("SELECT count(*) FROM keel_record_versions").scalar()
    engine.dispose()
    assert people == 80
    assert ("销售部 Q4 核心目标", 40, "新增客户数") in [(t, int(v), m) for t, v, m in goals]
    assert not any("≥" in t for t, _, _ in goals)  # titles name the goal; metric and target are fields
    assert versions >= len(goals)  # demo records went through the write path, with history


def test_database_unreachable_is_a_message_not_a_traceback(env):
    bad = {**env, "KEEL_DATABASE_URL": "postgresql+psycopg://nobody@127.0.0.1:1/none"}
    p = keel(bad, "app", "history", "goal_agility")
    assert p.returncode == 1
    assert "Traceback" not in p.stderr and "database" in p.stderr.lower()


def test_production_refuses_a_missing_or_default_secret(env):
    for secret in ("", "change-me"):
        p = keel({**env, "KEEL_ENV": "production", "KEEL_SECRET_KEY": secret}, "init")
        assert p.returncode == 1 and "KEEL_SECRET_KEY" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("value", ["Production", "prod", "dev", " production"])
def test_an_unknown_keel_env_is_a_clear_startup_error(env, value):
    # A typo must not silently run a production server in development mode (generated secret,
    # cookies without Secure).
    for args in (["init"], ["serve", "--port", "1"], ["worker", "--burst"]):
        p = keel({**env, "KEEL_ENV": value}, *args)
        assert p.returncode == 1, (args, p.stdout, p.stderr)
        assert "KEEL_ENV" in p.stderr and "development" in p.stderr and "production" in p.stderr
        assert "Traceback" not in p.stderr
    assert not (Path(env["KEEL_INSTANCE_PATH"]) / "secret_key").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_listens_on_the_given_port(env):
    run(env, "init")
    port = _free_port()
    proc = _start_server(env, port)
    try:
        body = _healthz(port)
        assert body["status"] == "ok" and body["apps"] == {"goal_agility": 1}
        assert _processes_mentioning(env["KEEL_INSTANCE_PATH"])  # its private redis-server
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    # `kill` of the server stops what it started: no private redis-server or worker is left behind.
    wait_until(lambda: _processes_mentioning(env["KEEL_INSTANCE_PATH"]) == [],
               "the server's private redis-server and worker to stop", every=0.2)


def _start_server(env, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "keel.cli", "serve", "--port", str(port)],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=REPO)
    deadline = time.monotonic() + 120  # generous: a busy machine starts a server, Redis and a worker slowly
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                return proc
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise
            time.sleep(0.2)


def _peak_memory_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) / 1024


def test_forty_parallel_logins_do_not_take_the_server_to_gigabytes(env):
    """Each argon2 check takes 64 MiB: forty at once used to take the server from ~100 MB to 2 GB."""
    run(env, "init")
    port = _free_port()
    # Let all forty reach the password check (distinct unknown usernames, no per-address limit).
    proc = _start_server({**env, "KEEL_LOGIN_LIMIT_PER_ADDRESS": "1000 per minute"}, port)
    try:
        before = _peak_memory_mb(proc.pid)

        def attempt(i):
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/auth/token", method="POST",
                                         data=json.dumps({"username": f"ghost{i}", "password": "x" * 12}).encode(),
                                         headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=60) as resp:
                    return resp.status
            except urllib.error.HTTPError as e:
                return e.code

        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(40) as pool:
            statuses = list(pool.map(attempt, range(40)))
        peak = _peak_memory_mb(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert set(statuses) <= {401, 503} and statuses.count(401) >= 2, statuses
    # Two hashing slots (KEEL_LOGIN_CONCURRENT_HASHES) of 64 MiB each, plus slack.
    assert peak - before < 300, (before, peak)


def _healthz(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=60) as resp:
        return json.loads(resp.read())


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on PATH")
def test_a_second_serve_on_the_same_instance_leaves_the_first_ones_redis_alone(env):
    run(env, "init")
    port = _free_port()
    first = _start_server(env, port)
    try:
        assert _healthz(port)["queue"]["status"] == "ok"
        sock = Path(env["KEEL_INSTANCE_PATH"]) / "redis.sock"
        assert sock.exists()
        # The same port (fails with "port in use") and another port: both refuse, saying why.
        for second_port in (port, _free_port()):
            p = keel(env, "serve", "--port", str(second_port))
            assert sock.exists()
            assert _healthz(port)["queue"]["status"] == "ok"  # the first server's queue still answers
            assert p.returncode == 1, (p.stdout, p.stderr)
            assert "already running" in p.stderr and str(first.pid) in p.stderr and "Traceback" not in p.stderr
    finally:
        first.terminate()
        first.wait(timeout=60)
    # Once the first has stopped, the instance folder is free again.
    port = _free_port()
    again = _start_server(env, port)
    try:
        assert _healthz(port)["queue"]["status"] == "ok"
    finally:
        again.terminate()
        again.wait(timeout=60)


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line or environment names `text` (the instance folder)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
            state = (proc / "stat").read_text().split(") ")[-1][:1]
        except OSError:
            continue
        if text.encode() in blob and state != "Z":
            found.append(int(proc.name))
    return found


def test_apps_folder_missing_is_reported(env):
    p = keel({**env, "KEEL_APPS_PATH": str(Path(env["KEEL_INSTANCE_PATH"]) / "nowhere")}, "init")
    assert p.returncode == 1 and "apps folder not found" in p.stderr


def test_validate_warns_when_an_approver_role_cannot_read_the_entity_and_still_succeeds(env, tmp_path):
    from test_workflow_support import FIXTURE

    app = tmp_path / "wf"
    shutil.copytree(FIXTURE, app)
    flow = json.loads((app / "workflows" / "anyof_flow.json").read_text())
    flow["steps"][0]["approvers"] = [{"rule": "role", "role": "auditor"}]
    (app / "workflows" / "anyof_flow.json").write_text(json.dumps(flow))
    meta = json.loads((app / "app.json").read_text())
    meta["roles"].append({"id": "auditor", "label": "Auditor"})
    (app / "app.json").write_text(json.dumps(meta))
    r = run(env, "app", "validate", str(app))
    assert r.exit_code == 0, r.output
    assert r.output.startswith("ok: app 'wfapp'")
    assert ("warning: workflows/anyof_flow.json: /steps/0/approvers/0: approver role 'auditor' cannot read "
            "entity 'expense'") in r.output
