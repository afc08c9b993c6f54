"""What one rendering of an admin-written template may spend, and the checks that hold it to that.

Jinja's sandbox stops attribute escapes, not work: `{% for a in 'x'*100000 %}{% for b in 'x'*100000 %}`
loops 10^10 times, `'%0999999999d' % 1`, `''|center(1000000000)` and `'{0:>999999999}'.format(1)` each
allocate a gigabyte, and a recursive macro ends in RecursionError. A `Budget` bounds every one of
those, and each limit reached raises `BudgetExceeded` (a SecurityError: the caller's clean template
error), never an unbounded allocation, a hang or a raw Python error.

Sizes are checked *before* the operation that would allocate them (an estimate from the arguments), so
the check itself is cheap; loop steps, calls and output are counted as they happen, and the wall
clock is read at each of them.
"""
from __future__ import annotations

import contextvars
import re
import string
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from jinja2.exceptions import SecurityError


@dataclass(frozen=True)
class Budget:
    max_output: int = 1_000_000   # characters the whole rendering produces
    max_steps: int = 100_000      # loop iterations plus calls
    max_string: int = 1_000_000   # characters one string (or items one list) an operation may build
    max_depth: int = 20           # nested macro calls
    seconds: float = 2.0          # wall clock


DEFAULT_BUDGET = Budget()


class BudgetExceeded(SecurityError):
    """A template that needed more than its budget; the message says which limit."""


@dataclass
class Spending:
    budget: Budget
    deadline: float
    steps: int = 0
    output: int = 0
    depth: int = 0
    started: float = field(default_factory=time.monotonic)

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.budget.max_steps:
            raise BudgetExceeded(f"the template ran more than {self.budget.max_steps} loop steps and calls")
        self.check_time()

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise BudgetExceeded(f"the template took longer than {self.budget.seconds:g} s to render")

    def wrote(self, chunk: str) -> None:
        self.output += len(chunk)
        if self.output > self.budget.max_output:
            raise BudgetExceeded(f"the template's output exceeds {self.budget.max_output} characters")
        self.check_time()


# The rendering in progress on this thread (a context variable: web requests render on many threads).
_CURRENT: contextvars.ContextVar[Spending | None] = contextvars.ContextVar("keel_template_budget", default=None)


def start(budget: Budget) -> tuple[Spending, contextvars.Token]:
    spending = Spending(budget, time.monotonic() + budget.seconds)
    return spending, _CURRENT.set(spending)


def stop(token: contextvars.Token) -> None:
    _CURRENT.reset(token)


def current() -> Spending:
    """The running rendering's spending; a template rendered outside `render_or_explain` (Jinja
    called directly) still gets the default budget rather than none."""
    spending = _CURRENT.get()
    if spending is None:  # sizes are still checked; steps and time are not summed across calls
        spending = Spending(DEFAULT_BUDGET, time.monotonic() + DEFAULT_BUDGET.seconds)
    return spending


def counted(iterable: Iterable[Any]) -> Iterator[Any]:
    """Iterate, one budget step per item (what every `{% for %}` loops over)."""
    spending = current()
    for item in iterable:
        spending.step()
        yield item


def check_size(n: int, what: str = "string") -> None:
    limit = current().budget.max_string
    if n > limit:
        raise BudgetExceeded(f"the template would build a {what} of more than {limit} characters")


def check_int_args(args: Iterable[Any]) -> None:
    """Widths and counts given to padding, wrapping and batching: none above the string limit."""
    for a in args:
        if isinstance(a, int) and not isinstance(a, bool):
            check_size(abs(a))


# %-formatting: flags, then a width and a precision, each digits or `*` (taken from the arguments).
_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?")


def check_percent_format(fmt: str, args: Any) -> None:
    for m in _PERCENT_SPEC.finditer(fmt):
        for part in m.groups():
            if part == "*":
                raise BudgetExceeded("a '*' width in %-formatting is not available in templates")
            if part is not None:
                check_size(int(part))
    check_size(len(fmt) + sum(len(str(a)) for a in (args if isinstance(args, tuple) else (args,))))


_DIGITS = re.compile(r"\d+")


def check_brace_format(fmt: str, depth: int = 0) -> None:
    """Widths and precisions in `str.format` specs, nested specs (`{0:{1}}`) included."""
    if depth > 2:
        return
    try:
        parsed = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # the real call reports the malformed format
    for _literal, _name, spec, _conversion in parsed:
        if spec:
            if "{" in spec:
                raise BudgetExceeded("a nested format spec is not available in templates")
            for digits in _DIGITS.findall(spec):
                check_size(int(digits))


def check_replace(s: str, old: Any, new: Any, count: Any = -1) -> None:
    old, new = str(old), str(new)
    times = (len(s) + 1) if old == "" else s.count(old)
    if isinstance(count, int) and count >= 0:
        times = min(times, count)
    check_size(len(s) + times * max(0, len(new) - len(old)))


def check_join(sep: Any, items: Any) -> list:
    """The items, materialised once so the estimate and the join see the same ones."""
    items = list(items)
    check_size(len(items), "list")
    check_size(len(str(sep)) * max(0, len(items) - 1) + sum(len(str(i)) for i in items))
    return items
