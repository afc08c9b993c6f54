"""The one Jinja sandbox for templates written in definitions (connector URLs and headers, notification
texts). docs/security.md, "template injection": templates render in Jinja's immutable sandbox, values are
data, and the operators that can allocate without limit are bounded."""
from __future__ import annotations

import operator
from typing import Any

from jinja2 import StrictUndefined, Template, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

MAX_REPEAT = 100_000  # longest string or list `*` may build
MAX_POWER = 10_000    # largest exponent `**` may take


class BoundedSandbox(ImmutableSandboxedEnvironment):
    # The sandbox stops attribute escapes but not `'x' * 10**9`; bound the two operators that allocate.
    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_POWER:
                raise SecurityError("exponent too large")
            return operator.pow(left, right)
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and len(seq) * count > MAX_REPEAT:
                raise SecurityError("repetition too large")
        return operator.mul(left, right)


def sandbox(*, autoescape: bool, **options: Any) -> BoundedSandbox:
    """A fresh sandbox with no globals: range, lipsum, cycler and namespace are not needed to fill in a
    text, and `range` makes loops of 10^10 steps easy."""
    env = BoundedSandbox(autoescape=autoescape, undefined=StrictUndefined, **options)
    env.globals.clear()
    return env


class RenderFailed(Exception):
    """Why a template could not render, as a phrase ("tried an unsafe operation: ...") that callers
    put after their own subject ("template ...", "the template ...")."""


def render_or_explain(compiled: Template, values: Any) -> str:
    """Render with `values` as data; every Jinja or Python failure becomes RenderFailed, never a
    traceback for whoever wrote the definition."""
    try:
        return compiled.render(dict(values))
    except SecurityError as exc:
        raise RenderFailed(f"tried an unsafe operation: {exc}") from None
    except UndefinedError as exc:
        raise RenderFailed(f"names an unknown value: {exc.message}") from None
    except JinjaTemplateError as exc:
        raise RenderFailed(f"failed: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError) as exc:
        raise RenderFailed(f"failed: {type(exc).__name__}: {exc}") from None
