"""Waiting and timing in tests without depending on the machine's speed (no tests here).

CI and the helpers' runs share two CPUs with other test runs and benchmarks: a step that takes 50 ms alone
can take seconds. So a test never sleeps a fixed time and then asserts; it waits for a condition, with a
limit only a real hang reaches (`wait_until`). And "this was refused without doing the work" is measured
in CPU time of the test's own thread (`cpu_seconds`), which other processes cannot inflate, never in wall
time."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

# A condition is waited for, never a time. A busy machine makes a one-second job take several; only a
# real hang should reach this.
PATIENCE = 180.0


def wait_until(condition: Callable[[], object], message: str, timeout: float = PATIENCE,
               every: float = 0.05) -> None:
    """Poll `condition()` until it is true; fail naming `message` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout:.0f} s for {message}"
        time.sleep(every)


@dataclass
class Spent:
    seconds: float = 0.0


@contextmanager
def cpu_seconds() -> Iterator[Spent]:
    """CPU time this thread spends in the block (`.seconds`, set at its end). Unlike wall time it does not
    grow while other processes have the CPU, so a bound on it is a bound on the work done: a check that
    refuses a payload up front stays at milliseconds however busy the machine, and one that does the
    work anyway (decompresses the bomb, builds the gigabyte string) does not."""
    spent, start = Spent(), time.thread_time()
    try:
        yield spent
    finally:
        spent.seconds = time.thread_time() - start
