"""What a job type is, the context it runs in, and the registry of known types.

A job type turns parameters into work in two steps: `plan` splits the work into chunks (small JSON
descriptors, e.g. an id range) and `run_chunk` does one chunk. Any worker may take any chunk, and a
chunk may run more than once (a retry, a worker killed mid-way), so `run_chunk` must write only through
`ctx.conn`: the executor commits the chunk's effects and its "done" mark in that one transaction, and
rolls both back together when anything fails.

Job types come from plugins through the `keel_job_types` hook (the built-in ones too, see
`builtin_types`); `collect_job_types` gathers them into a `JobTypeRegistry`."""
from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import sqlalchemy as sa

from keel.auth.actor import Actor
from keel.errors import KeelError

log = logging.getLogger("keel.jobs")

TYPE_NAME = re.compile(r"[a-z][a-z0-9_.]{0,99}")


class JobFailed(KeelError):
    """A failure no retry can fix (the acting user may no longer do this, the type is unknown): the
    chunk or run fails at once with this message."""


class JobType:
    """Subclass and set `name` and `params_schema`; override `plan` and `run_chunk`."""

    name: str = ""
    label: str = ""
    params_schema: ClassVar[Mapping[str, Any]] = {"type": "object"}

    def plan(self, ctx: JobContext, params: Mapping[str, Any]) -> list[Any]:
        """The chunks of this run, as JSON values. Small jobs return one chunk."""
        return [{}]

    def run_chunk(self, ctx: JobContext, params: Mapping[str, Any], chunk: Any) -> dict[str, int | float]:
        """Do one chunk, writing only through `ctx.conn`; return counts (name -> number)."""
        raise NotImplementedError

    def authorize(self, ctx: JobContext, params: Mapping[str, Any]) -> str | None:
        """Why `ctx.actor` may not run this job with these params (None: it may). Checked when the run
        starts and again before every chunk, so a permission revoked mid-run stops the run."""
        return None

    def definition_errors(self, app_def, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Problems with `params` that need the app definition (an unknown entity, say), as
        (JSON pointer inside params, message). The params JSON Schema is checked before this."""
        return []


@dataclass
class JobContext:
    """What a job type may use while planning or running a chunk."""

    conn: sa.Connection          # the transaction of this chunk (or of planning)
    engine: sa.Engine
    runtime: Any                 # keel.runtime.Runtime
    actor: Actor                 # SYSTEM, or the run_as user re-read from the directory
    app_id: str
    job_id: str
    run_id: int
    attempt: int
    options: Mapping[str, Any]   # timeout_seconds, retries, chunk_size, run_as
    scheduled_for: dt.datetime | None = None
    chunk_index: int | None = None
    log: logging.LoggerAdapter = field(default=None)  # type: ignore[assignment]
    on_progress: Callable[[int, int | None], None] | None = None
    on_checkpoint: Callable[[], None] | None = None

    def __post_init__(self):
        if self.log is None:
            self.log = logging.LoggerAdapter(log, {"run": self.run_id, "chunk": self.chunk_index})

    @property
    def built(self):
        """The app's latest built version (tables, definitions)."""
        return self.runtime.get(self.app_id)

    @property
    def chunk_size(self) -> int | None:
        return self.options.get("chunk_size")

    def progress(self, done: int, total: int | None = None) -> None:
        """Report progress inside a chunk (shown by `keel jobs run`; ignored on a worker)."""
        if self.on_progress is not None:
            self.on_progress(done, total)

    def checkpoint(self) -> None:
        """Commit what this chunk wrote so far, when its transaction has been open a little while (half a
        second): call it between items of a long chunk, so that other writers — web requests, on
        SQLite's one write lock — get their turn. Cheap to call often.

        Only for chunks that may run again over their own partial writes: a chunk that fails after a
        checkpoint is retried from its start with the committed part in place. Upserting by key is such
        a chunk; inserting or counting is not (leave those to one transaction, the default). Raises
        when the chunk was taken back meanwhile, committing nothing more."""
        if self.on_checkpoint is not None:
            self.on_checkpoint()


class JobTypeRegistry:
    def __init__(self, types: Iterable[JobType] = ()):
        self._types: dict[str, JobType] = {}
        for t in types:
            self.register(t)

    def register(self, job_type: JobType) -> None:
        name = getattr(job_type, "name", None)
        if not isinstance(name, str) or not TYPE_NAME.fullmatch(name):
            raise ValueError(f"job type name {name!r} must be lower-case letters, digits, '_' or '.'")
        existing = self._types.get(name)
        if existing is not None and type(existing) is not type(job_type):
            raise ValueError(f"job type '{name}' is registered twice ({type(existing).__module__} and "
                             f"{type(job_type).__module__})")
        self._types[name] = job_type

    def get(self, name: str) -> JobType | None:
        return self._types.get(name)

    def names(self) -> list[str]:
        return sorted(self._types)

    def __contains__(self, name: object) -> bool:
        return name in self._types


def _hook_of(candidate: Any):
    hook = getattr(candidate, "hook", None)
    return hook if hook is not None and hasattr(hook, "keel_job_types") else None


def find_plugin_manager(extensions: Mapping[str, Any]):
    """The pluggy plugin manager among a Flask app's extensions, whatever key the plugin host uses
    (anything with `.hook.keel_job_types`, or an object holding one as `.pm`)."""
    for value in extensions.values():
        for candidate in (value, getattr(value, "pm", None), getattr(value, "plugin_manager", None)):
            if candidate is not None and _hook_of(candidate) is not None:
                return candidate
    return None


def default_plugin_manager():
    """The plugin host's manager (`keel.plugins.manager.get_host()`), when the plugin SDK is installed
    and offers the `keel_job_types` hook; None otherwise."""
    try:
        from keel.plugins.manager import get_host
    except ImportError:
        return None
    try:
        host = get_host()
    except Exception:
        log.exception("the plugin host failed to start; only built-in job types are available")
        return None
    for candidate in (host, getattr(host, "pm", None), getattr(host, "plugin_manager", None)):
        if candidate is not None and _hook_of(candidate) is not None:
            return candidate
    return None


def collect_job_types(pm=None) -> JobTypeRegistry:
    """Every job type: from the plugin manager's `keel_job_types` hook when there is one, and the
    built-in types (registered through the same hook when the host registered `builtin_types`,
    otherwise added here). A plugin returning a broken type is logged and left out; Keel still starts."""
    from keel.jobs import builtin_types

    registry = JobTypeRegistry()
    results: list[Any] = []
    if pm is not None:
        try:
            results = list(_hook_of(pm).keel_job_types())
        except Exception:  # a plugin's hook raised: the others and the built-ins still count
            log.exception("a plugin's keel_job_types hook failed; its job types are not available")
    is_registered = getattr(pm, "is_registered", None)
    if pm is None or is_registered is None or not is_registered(builtin_types):
        results.append(builtin_types.keel_job_types())
    for batch in results:
        for job_type in batch or ():
            try:
                registry.register(job_type)
            except ValueError as e:
                log.error("job type not registered: %s", e)
    return registry
