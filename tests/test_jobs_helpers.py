"""Shared set-up for the job tests (no tests here): an app folder with job definitions, a running Keel
on it with an admin and a viewer, a real Redis with a queue of the test's own, a loop that works
that queue with an RQ worker in this process until a condition holds, and for fault tests a private
redis-server and `keel worker` processes the test starts, breaks and kills itself.

Redis: KEEL_TEST_REDIS_URL (default redis://127.0.0.1:6379/15). Each test uses its own queue name and
deletes only the keys carrying it; nothing else in that database is touched. Without a reachable
server the Redis tests are skipped, unless KEEL_REQUIRE_REDIS=1 (CI), which makes them fail."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from conftest import make_app
from helpers_timing import PATIENCE, wait_until
from keel.hooks import hookimpl

REDIS_URL = os.environ.get("KEEL_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TRACKER = Path(__file__).resolve().parent / "fixtures" / "api_app"


def redis_available() -> bool:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
        return True
    except redis.RedisError:
        if os.environ.get("KEEL_REQUIRE_REDIS") == "1":
            raise RuntimeError(f"Redis is required (KEEL_REQUIRE_REDIS=1) but {REDIS_URL} is unreachable") from None
        return False


@pytest.fixture(name="redis_queue")
def redis_queue_fixture():
    """(url, queue name) of a queue only this test uses; its keys are deleted afterwards."""
    if not redis_available():
        pytest.skip(f"Redis not reachable at {REDIS_URL} (set KEEL_TEST_REDIS_URL)")
    name = f"keeltest-{uuid.uuid4().hex[:10]}"
    yield REDIS_URL, name
    import redis

    from keel.jobs.queue import forget_queue

    forget_queue(redis.Redis.from_url(REDIS_URL), name)


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def write_app(root: Path, jobs: dict[str, dict]) -> Path:
    """The tracker app (project, task) with these job definitions, as a folder under `root`."""
    folder = root / "tracker_app"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(TRACKER, folder)
    (folder / "jobs").mkdir()
    for job_id, body in jobs.items():
        (folder / "jobs" / f"{job_id}.json").write_text(json.dumps({"id": job_id, **body}), "utf-8")
    return folder


@dataclass
class JobWorld:
    app: object
    client: object
    engine: sa.Engine
    env: object
    folder: Path
    tokens: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)

    def headers(self, who: str = "admin") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def runs(self) -> list[sa.Row]:
        from keel.storage.job_tables import job_runs

        with self.engine.connect() as conn:
            return conn.execute(sa.select(job_runs).order_by(job_runs.c.id)).all()

    def chunks(self, run_id: int) -> list[sa.Row]:
        from keel.storage.job_tables import job_chunks

        with self.engine.connect() as conn:
            return conn.execute(sa.select(job_chunks).where(job_chunks.c.run_id == run_id)
                                .order_by(job_chunks.c.idx)).all()

    def add_projects(self, n: int) -> None:
        from keel.actor import SYSTEM
        from keel.storage import records

        self.env.runtime.refresh()
        built = self.env.runtime.get("tracker")
        with self.engine.begin() as conn:
            for i in range(n):
                records.create(conn, built, "project", {"name": f"project {i}"}, SYSTEM)

    def reapply(self, jobs: dict[str, dict]) -> None:
        from keel.actor import SYSTEM
        from keel.apply import apply_app
        from keel.definitions.loader import load_app_dir

        self.folder = write_app(self.folder.parent, jobs)
        # Checked against this app's registries: a test may give the app job types of its own.
        apply_app(self.engine, load_app_dir(self.folder, self.env.runtime.registries), SYSTEM)
        self.env.runtime.refresh()


def make_job_world(tmp_path: Path, db_url: str, jobs: dict[str, dict], job_types=(), **config) -> JobWorld:
    """An app with `jobs`; `job_types` are registered for it as a plugin of its own would."""
    from keel.actor import SYSTEM
    from keel.apply import apply_app
    from keel.auth.directory import add_user
    from keel.auth.tokens import issue_token
    from keel.definitions.loader import load_app_dir
    from keel.jobs import jobs_env

    folder = write_app(tmp_path, jobs)
    if job_types:
        config["KEEL_EXTRA_PLUGINS"] = [("test_job_types", _JobTypesPlugin(list(job_types)))]
    flask_app = make_app(tmp_path, db_url, **config)
    env = jobs_env(flask_app)
    apply_app(env.engine, load_app_dir(folder, env.runtime.registries), SYSTEM)
    env.runtime.refresh()
    with env.engine.begin() as conn:
        ids = {"admin": add_user(conn, "ada", "Ada Admin", SYSTEM, is_admin=True),
               "manager": add_user(conn, "mia", "Mia Manager", SYSTEM, roles=["manager"]),
               "nobody": add_user(conn, "ned", "Ned Nobody", SYSTEM, roles=[])}
        tokens = {who: issue_token(conn, uid) for who, uid in ids.items()}
    return JobWorld(flask_app, flask_app.test_client(), env.engine, env, folder, tokens, ids)


class _JobTypesPlugin:
    def __init__(self, types):
        self.types = types

    @hookimpl
    def keel_job_types(self):
        return self.types


def rq_dispatcher(env, redis_queue):
    from keel.jobs.queue import RQDispatcher

    url, name = redis_queue
    env.dispatcher = RQDispatcher(url, name)
    return env.dispatcher


# `wait_for(condition, what)`: the shared wait for a condition (helpers_timing), under its old name.
wait_for = wait_until


def _test_worker_class():
    from rq import SimpleWorker

    class TestWorker(SimpleWorker):
        def subscribe(self):
            """No command listener: nothing sends commands here, and RQ's teardown can wait up to a
            minute for that thread to notice it was unsubscribed."""

    return TestWorker


def work_until(env, condition, timeout: float = PATIENCE) -> None:
    """Work the env's queue with an RQ SimpleWorker in this process (burst, with the scheduler so
    retries waiting out their back-off get moved in) until `condition()` holds."""
    from keel.jobs.tasks import set_worker_env

    set_worker_env(env)
    dispatcher = env.dispatcher
    worker_class = _test_worker_class()
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"the queue did not get the work done in {timeout:.0f} s")
        worker = worker_class([dispatcher.queue], connection=dispatcher.connection,
                              name=f"{dispatcher.queue_name}-{uuid.uuid4().hex[:6]}")
        if not worker.work(burst=True, with_scheduler=True, logging_level="WARNING"):
            time.sleep(0.05)


def run_status(world: JobWorld, run_id: int) -> str:
    return next(r.status for r in world.runs() if r.id == run_id)


# ---- fault tests: a private redis-server, real worker processes ------------------------------------

def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class PrivateRedis:
    """A redis-server of this test's own on a free port, which the test may kill, restart or fill."""

    def __init__(self, folder: Path):
        self.folder, self.port, self.proc = folder, free_port(), None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self._answers, f"redis-server on port {self.port}")

    def _answers(self) -> bool:
        import redis

        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, socket_connect_timeout=5, socket_timeout=30)

    def kill(self) -> None:
        """Gone without a word, and with it everything it held (no persistence)."""
        self.proc.kill()
        self.proc.wait()

    def refuse_writes(self) -> None:
        """It still answers PING, but every write fails with an out-of-memory error."""
        self.client().config_set("maxmemory-policy", "noeviction")
        self.client().config_set("maxmemory", 100000)

    def accept_writes(self) -> None:
        self.client().config_set("maxmemory", 0)


@pytest.fixture(name="private_redis")
def private_redis_fixture(tmp_path):
    if shutil.which("redis-server") is None:
        if os.environ.get("KEEL_REQUIRE_REDIS") == "1":
            raise RuntimeError("redis-server is required (KEEL_REQUIRE_REDIS=1) but not installed")
        pytest.skip("redis-server not installed")
    server = PrivateRedis(tmp_path / "redis")
    yield server
    if server.proc.poll() is None:
        server.kill()


def start_worker(world: JobWorld, redis_url: str, queue: str, name: str, **environ: str) -> subprocess.Popen:
    """A `keel worker` process on the world's database, in a process group of its own (so a kill takes
    RQ's scheduler process along); RQ puts the work horse in a session of its own, see `kill_worker`."""
    env = {**os.environ, "KEEL_DATABASE_URL": str(world.engine.url.render_as_string(hide_password=False)),
           "KEEL_INSTANCE_PATH": world.app.config["KEEL_INSTANCE_PATH"], "KEEL_REDIS_URL": redis_url,
           "KEEL_JOB_QUEUE": queue, "KEEL_ENV": "development", **environ}
    return subprocess.Popen([sys.executable, "-m", "keel.cli", "worker", "--name", name],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def kill_worker(proc: subprocess.Popen) -> None:
    """SIGKILL, no clean-up of any kind: the worker, its scheduler process (same group) and the work
    horse running a job (RQ puts that in a session of its own)."""
    for pid in children(proc.pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def stop_worker(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        kill_worker(proc)
