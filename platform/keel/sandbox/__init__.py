"""The one Jinja sandbox for templates written in definitions (connector URLs and headers, notification
texts). docs/security.md, "template injection": templates render in Jinja's immutable sandbox, values are
data, and every rendering has a budget (`sandbox.budget`): output size, loop steps and calls, string
sizes in operators, filters, string methods and formatting, macro depth and wall time. Whatever a
template does, it ends quickly with its text or with RenderFailed."""
from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from decimal import Decimal
from types import BuiltinMethodType
from typing import Any

from jinja2 import StrictUndefined, Template, UndefinedError, nodes, pass_eval_context
from jinja2.exceptions import SecurityError
from jinja2.exceptions import TemplateError as JinjaTemplateError
from jinja2.runtime import LoopContext, Macro, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.visitor import NodeTransformer

from keel.sandbox import budget
from keel.sandbox.budget import DEFAULT_BUDGET, Budget, BudgetExceeded

__all__ = ["DEFAULT_BUDGET", "AnyKeys", "Budget", "BudgetExceeded", "BoundedSandbox", "RenderFailed",
           "render_or_explain", "sandbox", "underscore_names"]

MAX_REPEAT = 100_000  # longest string or list `*` may build
MAX_POWER = 10_000    # largest exponent `**` may take
MAX_INT_BITS = 100_000  # size of an integer `**` or `*` may build (estimated from the operands first)
# Added to the parsed tree (see _Budgeted): what every {% for %} iterates over, and every `a ~ b`.
_LOOP_FILTER, _CONCAT_FILTER = "keel_counted", "keel_concat"

# Filters whose integer arguments are widths or counts (`center(10**9)`, `batch(10**9, 'x')`).
_SIZED_FILTERS = ("center", "wordwrap", "truncate", "batch", "slice")


def _format_filter(value: Any, *args: Any, **kwargs: Any) -> str:
    if args and kwargs:
        raise SecurityError("format takes positional or keyword arguments, not both")
    fmt = str(value)
    budget.check_percent_format(fmt, args or kwargs)
    return fmt % (kwargs or args)


def _replace_filter(original: Callable) -> Callable:
    @functools.wraps(original)
    def replace(eval_ctx, s, old, new, count=None):
        budget.check_replace(str(s), old, new, -1 if count is None else count)
        return original(eval_ctx, s, old, new, count)
    return replace


def _join_filter(original: Callable) -> Callable:
    @functools.wraps(original)
    def join(eval_ctx, value, d="", attribute=None):
        items = budget.check_join(d, value)
        return original(eval_ctx, items, d, attribute)
    return join


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sum_filter(original: Callable) -> Callable:
    @functools.wraps(original)
    def sum_(*args, **kwargs):
        start = kwargs.get("start", args[3] if len(args) > 3 else 0)
        if not isinstance(start, (int, float, Decimal)):  # summing lists is quadratic, in C: no steps
            raise SecurityError("sum adds numbers only")
        return original(*args, **kwargs)
    return sum_


def _sized_filter(original: Callable) -> Callable:
    @functools.wraps(original)
    def sized(*args, **kwargs):
        budget.check_int_args(args[1:])
        budget.check_int_args(kwargs.values())
        return original(*args, **kwargs)
    return sized


class _Budgeted(NodeTransformer):
    """Rewrites a parsed template so that every `{% for %}` iterates through the budget's step counter
    and every `~` concatenation is size-checked (Jinja compiles both to plain Python the sandbox never
    sees)."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _LOOP_FILTER, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(nodes.List(node.nodes, lineno=node.lineno), _CONCAT_FILTER, [], [], None, None,
                            lineno=node.lineno)


@pass_eval_context
def _concat(eval_ctx: Any, parts: list) -> str:
    budget.check_size(sum(len(str(p)) for p in parts))
    return markup_join(parts) if eval_ctx.autoescape else str_join(parts)


def _indent_filter(original: Callable) -> Callable:
    @functools.wraps(original)
    def indent(s, width=4, *args, **kwargs):
        if isinstance(width, int):
            budget.check_int_args([width])
            budget.check_size(len(str(s)) + str(s).count("\n") * abs(width))
        else:
            budget.check_size(len(str(s)) + str(s).count("\n") * len(str(width)))
        return original(s, width, *args, **kwargs)
    return indent


class BoundedSandbox(ImmutableSandboxedEnvironment):
    # The sandbox stops attribute escapes but not work: bound the operators that allocate.
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.filters[_LOOP_FILTER] = budget.counted
        self.filters[_CONCAT_FILTER] = _concat
        self.filters["indent"] = _indent_filter(self.filters["indent"])
        self.filters["sum"] = _sum_filter(self.filters["sum"])
        self.filters["format"] = _format_filter
        self.filters["replace"] = _replace_filter(self.filters["replace"])
        self.filters["join"] = _join_filter(self.filters["join"])
        for name in _SIZED_FILTERS:
            self.filters[name] = _sized_filter(self.filters[name])

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        return _Budgeted().visit(super()._parse(source, name, filename))

    def call_binop(self, context: Any, operator_name: str, left: Any, right: Any) -> Any:
        budget.current().check_time()
        if operator_name == "**":
            if isinstance(right, (int, float)) and abs(right) > MAX_POWER:
                raise SecurityError("exponent too large")
            if _is_int(left) and _is_int(right) and abs(left) > 1 and right * abs(left).bit_length() > MAX_INT_BITS:
                raise BudgetExceeded(f"the template would build a number of more than {MAX_INT_BITS} bits")
            return operator.pow(left, right)
        if operator_name == "%":
            if isinstance(left, str):
                budget.check_percent_format(left, right)
            return operator.mod(left, right)
        if operator_name == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                budget.check_size(len(left) + len(right))
            return operator.add(left, right)
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, (str, list, tuple)) and isinstance(count, int) and len(seq) * count > MAX_REPEAT:
                raise SecurityError("repetition too large")
        if _is_int(left) and _is_int(right) and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
            raise BudgetExceeded(f"the template would build a number of more than {MAX_INT_BITS} bits")
        return operator.mul(left, right)

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        spending = budget.current()
        spending.step()
        target = getattr(__obj, "__wrapped__", __obj)  # the sandbox wraps str.format
        owner = getattr(target, "__self__", None)
        if isinstance(target, BuiltinMethodType) and owner is not None:
            # A method of a value: `''.ljust(10**9)`, `(1).to_bytes(10**9)`, `b''.center(10**9)` —
            # no integer argument of a built-in method may exceed the string limit.
            budget.check_int_args(args)
            budget.check_int_args(kwargs.values())
            name = target.__name__
            if isinstance(owner, str) and name in ("format", "format_map"):
                budget.check_brace_format(owner)
            elif isinstance(owner, (str, bytes)) and name == "replace" and len(args) >= 2:
                budget.check_replace(str(owner), *args[:3])
            elif isinstance(owner, (str, bytes)) and name == "join" and args:
                args = (budget.check_join(owner, args[0]), *args[1:])
        if isinstance(__obj, LoopContext) and args:  # a recursive loop's next level
            args = (budget.counted(args[0]), *args[1:])
        if isinstance(__obj, Macro):
            spending.depth += 1
            try:
                if spending.depth > spending.budget.max_depth:
                    raise BudgetExceeded(f"macros call each other more than {spending.budget.max_depth} "
                                         f"levels deep")
                return super().call(__context, __obj, *args, **kwargs)
            finally:
                spending.depth -= 1
        return super().call(__context, __obj, *args, **kwargs)


def sandbox(*, autoescape: bool, **options: Any) -> BoundedSandbox:
    """A fresh sandbox with no globals: range, lipsum, cycler and namespace are not needed to fill in a
    text, and `range` makes loops of 10^10 steps easy."""
    env = BoundedSandbox(autoescape=autoescape, undefined=StrictUndefined, **options)
    env.globals.clear()
    return env


class AnyKeys(dict):
    """Sample data whose names are not known before run time (a connector's `vars`, the record of a
    notification no workflow sends yet): every key reads as a sample text, except `_` names, so a check
    render finds unknown names everywhere else and unsafe attributes here too."""

    def __missing__(self, key: Any) -> str:
        if not isinstance(key, str) or key.startswith("_"):
            raise KeyError(key)
        return "sample"


def underscore_names(tree: nodes.Template) -> list[str]:
    """Attribute and item names starting with `_` in a parsed template (`''.__class__`, `x['_y']`)."""
    out = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        name = node.attr if isinstance(node, nodes.Getattr) else getattr(node.arg, "value", None)
        if isinstance(name, str) and name.startswith("_"):
            out.append(name)
    return out


class RenderFailed(Exception):
    """Why a template could not render, as a phrase ("tried an unsafe operation: ...") that callers
    put after their own subject ("template ...", "the template ...")."""


def render_or_explain(compiled: Template, values: Any, limits: Budget = DEFAULT_BUDGET) -> str:
    """Render with `values` as data within `limits`; every Jinja or Python failure becomes RenderFailed,
    never a traceback for whoever wrote the definition."""
    spending, token = budget.start(limits)
    try:
        parts = []
        for chunk in compiled.generate(dict(values)):
            spending.wrote(chunk)
            parts.append(chunk)
        return "".join(parts)
    except BudgetExceeded as exc:
        raise RenderFailed(f"exceeded its budget: {exc}") from None
    except SecurityError as exc:
        raise RenderFailed(f"tried an unsafe operation: {exc}") from None
    except UndefinedError as exc:
        raise RenderFailed(f"names an unknown value: {exc.message}") from None
    except JinjaTemplateError as exc:
        raise RenderFailed(f"failed: {exc}") from None
    except RecursionError:
        raise RenderFailed("exceeded its budget: it nests too deeply") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, MemoryError) as exc:
        raise RenderFailed(f"failed: {type(exc).__name__}: {exc}") from None
    finally:
        budget.stop(token)
