"""`keel demo` stops on Ctrl+C (SIGINT to the terminal's whole process group) or SIGTERM quietly: exit code 0,
no traceback from the server, its worker or its private redis-server, and nothing left running."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_demo(tmp_path: Path) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    env = {**os.environ, "KEEL_INSTANCE_PATH": str(tmp_path / "instance"),
           "KEEL_APPS_PATH": str(ROOT / "app_definitions"), "KEEL_PLUGINS_PATH": str(ROOT / "plugins")}
    env.pop("KEEL_REDIS_URL", None)  # the demo's own private redis-server and worker, as a new user has
    env.pop("KEEL_DATABASE_URL", None)
    log = tmp_path / "demo.log"
    # a terminal: the demo leads its own process group and takes SIGINT by default
    proc = subprocess.Popen([sys.executable, "-m", "keel.cli", "demo", "--port", str(port)], env=env,
                            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=1)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(log.read_text())
            time.sleep(0.3)
    time.sleep(2)  # the worker is up and listening
    return proc, port, log


def children_of(instance: Path) -> str:
    return subprocess.run(["pgrep", "-f", str(instance)], capture_output=True, text=True).stdout.strip()


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server for the demo's worker")
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_keel_demo_stops_quietly(tmp_path, how):
    proc, _port, log = start_demo(tmp_path)
    try:
        if how == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        rc = proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    time.sleep(0.5)
    text = log.read_text()
    after = text.split("Press CTRL+C to quit", 1)[-1]
    assert rc == 0, text[-3000:]
    assert "Traceback" not in after and "Error" not in after.replace("ERROR", "") and "ERROR" not in after, after
    assert children_of(tmp_path / "instance") == ""
