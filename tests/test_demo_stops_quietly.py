"""`keel demo` stops on Ctrl+C (SIGINT to the terminal's whole process group) or SIGTERM quietly: exit code 0,
no traceback from the server, its worker or its private redis-server, and nothing left running."""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from helpers_timing import wait_until

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
    def serving() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5)
            return True
        except OSError:
            if proc.poll() is not None:
                pytest.fail(log.read_text())
            return False

    try:
        wait_until(serving, "the demo to serve its login page", every=0.3)
        # Signalled before its worker has set up its own signal handling, the worker would die with a
        # KeyboardInterrupt traceback: wait until RQ reports it idle (registered, handlers installed,
        # waiting for work), however long a busy machine takes to start it.
        wait_until(lambda: worker_idle(proc.pid), "the demo's worker to be up and waiting for work", every=0.3)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(60)
        raise
    return proc, port, log


def private_redis_socket(demo_pid: int) -> str | None:
    """The unix socket of the private redis-server the demo started (its child): from its process title
    ("redis-server unixsocket:PATH", Redis 7) or, where the title is not rewritten, its arguments."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            title = (stat.parent / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        found = re.search(r"unixsocket:([^\s\0]+)", title) or re.search(r"--unixsocket\0([^\0]+)", title)
        if ppid == demo_pid and "redis-server" in title and found:
            return found.group(1)
    return None


def worker_idle(demo_pid: int) -> bool:
    """RQ's own record of the demo's worker: state "idle" is set in its work loop, after
    `_install_signal_handlers`."""
    import redis
    from rq import Worker

    sock = private_redis_socket(demo_pid)
    if sock is None:
        return False
    try:
        connection = redis.Redis(unix_socket_path=sock, socket_timeout=5)
        return any(w.get_state() == "idle" for w in Worker.all(connection=connection))
    except (redis.RedisError, OSError):
        return False


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
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # Nothing left running (the redis-server and worker stop with the demo; a leftover would stay), and
    # only then is the log complete.
    wait_until(lambda: children_of(tmp_path / "instance") == "", "the demo's redis-server and worker to stop")
    text = log.read_text()
    after = text.split("Press CTRL+C to quit", 1)[-1]
    assert rc == 0, text[-3000:]
    assert "Traceback" not in after and "Error" not in after.replace("ERROR", "") and "ERROR" not in after, after
