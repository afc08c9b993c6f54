"""What a job type is, the context it runs in, and the registry of known types.

A job type turns parameters into work in two steps: `plan` splits the work into chunks (small JSON
descriptors, e.g. an id range) and `run_chunk` does one chunk. Any worker may take any chunk, and a
chunk may run more than once (a retry, a worker killed mid-way), so `run_chunk` must write only through
`ctx.conn`: the executor commits the chunk's effects and its "done" mark in that one transaction, and
rolls both back together when anything fails.

Job types come from plugins through the `keel_job_types` hook (the built-in ones too, see jobs/plugin.py);
the plugin host checks their names and hands them down as `registries.job_types`."""
from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import sqlalchemy as sa

from keel.actor import Actor
from keel.errors import KeelError

log = logging.getLogger("keel.jobs")

TYPE_NAME = re.compile(r"[a-z][a-z0-9_.]{0,99}")
MAX_PROBLEMS = 100  # problems a chunk keeps word for word (JobContext.report); the rest are counted


class JobFailed(KeelError):
    """A failure no retry can fix (the acting user may no longer do this, the type is unknown): the
    chunk or run fails at once with this message."""

    retryable = False


def retry_can_help(e: BaseException) -> bool:
    """Whether a chunk that raised `e` is worth another attempt (after its back-off).

    - JobFailed: never;
    - an error that says so itself (`retryable` True or False: ConnectorError, keel.outbound's errors,
      a plugin's own) is taken at its word: timeouts, lost connections, HTTP 5xx and 429 are retried;
      401/403 and other 4xx answers, a missing secret, malformed JSON, a cursor loop are not;
    - any other KeelError is a message about data or configuration, which the same input repeats: not
      retried (a Conflict, someone else having written first, says it is retryable);
    - anything else (a bug, a database hiccup, a plain exception a job type raised) is retried, as an
      error nobody has classified may well be passing."""
    said = getattr(e, "retryable", None)
    if isinstance(said, bool):
        return said
    return not isinstance(e, KeelError)


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

    def params_problems(self, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        """Problems with the params of a run being asked for now that a JSON Schema cannot express (a
        date in the future, say), as (JSON pointer inside params, message). Checked after the schema,
        before the run is recorded: the API answers 422, the CLI an error, and nothing is written."""
        return []

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
    problems: list[str] = field(default_factory=list)  # what `report` was told, kept with the chunk
    problems_total: int = 0

    def __post_init__(self):
        if self.log is None:
            self.log = logging.LoggerAdapter(log, {"run": self.run_id, "chunk": self.chunk_index})

    def report(self, problem: str) -> None:
        """Record why an item was skipped or not written ("item 3 (key 'C-9'): amount: not a number").
        Logged as a warning and kept with the chunk when it commits, so the run's record (the API's
        `problems`, the run's page) says why, not only the worker's log. The first MAX_PROBLEMS of a
        chunk are kept word for word, the rest are counted."""
        self.problems_total += 1
        if self.problems_total <= MAX_PROBLEMS:  # a sync of 200,000 bad rows must not flood log or run
            self.problems.append(str(problem)[:1000])
            self.log.warning("%s", problem)
        elif self.problems_total == MAX_PROBLEMS + 1:
            self.log.warning("more problems than %s in this chunk; the rest are only counted", MAX_PROBLEMS)

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
