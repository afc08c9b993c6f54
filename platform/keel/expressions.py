"""Safe expressions in definitions: computed fields, conditions, visibility rules, workflow conditions.

An expression is checked twice. At parse time the AST must consist only of whitelisted node types
(constants, names, arithmetic, comparisons, `and`/`or`/`not`, `a if c else b`, bounded tuple/list
literals, constant subscripts and calls of registry functions by bare name); attribute access,
f-strings, lambdas, comprehensions, walrus, starred and keyword arguments never reach the evaluator.
At evaluation time (simpleeval with our own operator table) every operation that could build a huge
value is bounded and the whole evaluation has a step and CPU-time budget. (CPU time of the evaluating
thread, not wall time: a server busy with other requests must not refuse a legitimate expression, and
an abusive one spends its CPU however idle or busy the machine is.)

Numbers are exact: float literals become Decimal (`0.15` is `Decimal("0.15")`), `int / int` is a
Decimal, and Decimal mixed with int stays Decimal. Nothing here ever calls `eval`.
"""
from __future__ import annotations

import ast
import datetime as dt
import decimal
import math
import operator as op
import time
import warnings
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from simpleeval import InvalidExpression, SimpleEval

from keel import workdays
from keel.errors import KeelError

MAX_SOURCE_LENGTH = 1000
MAX_DEPTH = 100            # AST nesting; keeps evaluation far from Python's recursion limit
MAX_LITERAL_ITEMS = 100    # elements of one tuple/list literal
MAX_SEQUENCE_LENGTH = 100_000  # chars/items a `+` or `*` may produce (long_text holds 100,000)
MAX_POWER_BITS = 10_000    # size of an integer power's result, estimated before computing it
MAX_INT_DIGITS = 100       # int(x) of a Decimal larger than this is refused, not materialised
MAX_STEPS = 10_000         # nodes visited per evaluation
TIME_BUDGET_SECONDS = 0.25  # CPU time of the evaluating thread, per evaluation

# One fixed decimal context, so the result never depends on whatever context the caller's thread set.
_DECIMAL_CONTEXT = decimal.Context(prec=28, rounding=decimal.ROUND_HALF_EVEN, Emax=999_999, Emin=-999_999,
                                   traps=[decimal.InvalidOperation, decimal.DivisionByZero, decimal.Overflow])


class ExpressionError(KeelError):
    """An expression that cannot be compiled or evaluated. `message` is plain English, `source` the
    expression text, `position` the 1-based column (when known)."""

    def __init__(self, message: str, source: str = "", position: int | None = None):
        self.message, self.source, self.position = message, source, position
        super().__init__(str(self))

    def __str__(self) -> str:
        where = f" at column {self.position}" if self.position else ""
        return f"{self.message}{where} in expression {self.source!r}"


# ---------------------------------------------------------------------------------------------
# The function registry: small, pure, reviewed. tests/test_expressions.py snapshots it.
# Functions that transform a value return None for None ("empty in, empty out"), so a condition on
# an empty field is not an error on every record that leaves it empty.

def _abs(x):
    return None if x is None else abs(x)


def _round(x, ndigits=0):
    """Half-up rounding (what business users expect: round(2.5) == 3). round(x) gives an int,
    round(x, n) a Decimal with n places."""
    if x is None:
        return None
    if isinstance(ndigits, bool) or not isinstance(ndigits, int) or not -28 <= ndigits <= 28:
        raise ValueError("round() needs a whole number of digits between -28 and 28")
    d = _to_decimal(x).quantize(Decimal(1).scaleb(-ndigits), rounding=decimal.ROUND_HALF_UP)
    return _to_int(d) if ndigits == 0 else d


def _len(x):
    return 0 if x is None else len(x)


def coalesce(*values):
    """The first value that is not None (None if all are)."""
    return next((v for v in values if v is not None), None)


def if_null(value, default):
    return default if value is None else value


def _text(fn_name: str, x) -> str:
    if not isinstance(x, str):
        raise TypeError(f"{fn_name}() needs text, got {type(x).__name__}")
    return x


def lower(s):
    return None if s is None else _text("lower", s).lower()


def upper(s):
    return None if s is None else _text("upper", s).upper()


def contains(container, item):
    """`item` in a list, or a substring in a text; False for an empty (None) container."""
    if container is None:
        return False
    if isinstance(container, str):
        return _text("contains", item) in container
    return item in container


def startswith(s, prefix):
    if s is None:
        return False
    return _text("startswith", s).startswith(_text("startswith", prefix))


def _to_decimal(x):
    if x is None:
        return None
    if isinstance(x, float):
        x = repr(x)
    if isinstance(x, str):
        x = x.strip()
    if not isinstance(x, (int, str, Decimal)):
        raise TypeError(f"decimal() needs a number or text, got {type(x).__name__}")
    try:
        d = Decimal(x)
    except decimal.InvalidOperation:
        raise ValueError(f"not a number: {x!r}") from None
    if not d.is_finite():
        raise ValueError(f"not a finite number: {x!r}")
    return d


def _to_int(x):
    """A whole number, truncated toward zero. Huge Decimals (1e999999) are refused before Python
    would build a million-digit int."""
    if x is None or isinstance(x, int):
        return x
    d = _to_decimal(x)
    if d.adjusted() >= MAX_INT_DIGITS:
        raise ValueError(f"int() of a number with more than {MAX_INT_DIGITS} digits")
    return int(d)


def today():
    """Today's date in UTC."""
    return dt.datetime.now(dt.UTC).date()


def _as_date(fn_name: str, x) -> dt.date:
    if isinstance(x, dt.datetime):
        return x.date()
    if isinstance(x, dt.date):
        return x
    raise TypeError(f"{fn_name}() needs a date, got {type(x).__name__}")


def days_between(a, b):
    """Whole days from `a` to `b` (negative when `b` is earlier)."""
    if a is None or b is None:
        return None
    return (_as_date("days_between", b) - _as_date("days_between", a)).days


def working_days(start, end):
    """Working days after `start` up to and including `end` (negative when `end` is earlier), on the
    working calendar of workflow SLAs: weekends, public holidays and 调休 working weekends count as
    the State Council publishes them."""
    if start is None or end is None:
        return None
    return workdays.working_days(_as_date("working_days", start), _as_date("working_days", end))


def add_working_days(start, n):
    """The date `n` working days after `start` (before it for a negative `n`)."""
    if start is None or n is None:
        return None
    if isinstance(n, Decimal) and n == n.to_integral_value():
        n = int(n)
    return workdays.add_working_days(_as_date("add_working_days", start), n)


def year(d):
    return None if d is None else _as_date("year", d).year


def month(d):
    return None if d is None else _as_date("month", d).month


FUNCTIONS: Mapping[str, Callable[..., Any]] = MappingProxyType({
    "abs": _abs, "min": min, "max": max, "round": _round, "len": _len,
    "coalesce": coalesce, "if_null": if_null, "lower": lower, "upper": upper,
    "contains": contains, "startswith": startswith, "decimal": _to_decimal, "int": _to_int,
    "today": today, "days_between": days_between, "year": year, "month": month,
    "working_days": working_days, "add_working_days": add_working_days,
})


# ---------------------------------------------------------------------------------------------
# Operators: simpleeval's table replaced by ours, each bounded and exact.

class LimitExceeded(InvalidExpression):
    pass


def _is_sequence(x) -> bool:
    return isinstance(x, (str, list, tuple))


def _add(a, b):
    if _is_sequence(a) and _is_sequence(b) and len(a) + len(b) > MAX_SEQUENCE_LENGTH:
        raise LimitExceeded(f"the result would be longer than {MAX_SEQUENCE_LENGTH}")
    return a + b


def _mul(a, b):
    for seq, n in ((a, b), (b, a)):
        if _is_sequence(seq) and isinstance(n, int) and len(seq) * n > MAX_SEQUENCE_LENGTH:
            raise LimitExceeded(f"the result would be longer than {MAX_SEQUENCE_LENGTH}")
    return a * b


def _div(a, b):
    # int / int would be a float in Python; here it is an exact Decimal.
    if isinstance(a, int) and isinstance(b, int):
        a = Decimal(a)
    return a / b


def _mod(a, b):
    # `"%0999999999d" % 1` would be string formatting with an unbounded width.
    if isinstance(a, str):
        raise TypeError("% is only for numbers (text formatting is not available)")
    return a % b


def _pow(a, b):
    if isinstance(a, int) and isinstance(b, int):
        if b < 0:
            return Decimal(a) ** b
        # Estimate the size of the result before computing it: 9**9**9 stops here, instantly.
        if abs(a) > 1 and b * abs(a).bit_length() > MAX_POWER_BITS:
            raise LimitExceeded(f"{a} ** {b} is too large")
        return a ** b
    # A Decimal power is computed to 28 digits and overflows (an error) past the context's Emax.
    return a ** b


def _is(a, b):
    return a is b


def _is_not(a, b):
    return a is not b


OPERATORS: Mapping[type, Callable[..., Any]] = {
    ast.Add: _add, ast.Sub: op.sub, ast.Mult: _mul, ast.Div: _div, ast.FloorDiv: op.floordiv,
    ast.Mod: _mod, ast.Pow: _pow,
    ast.USub: op.neg, ast.UAdd: op.pos, ast.Not: op.not_,
    ast.Eq: op.eq, ast.NotEq: op.ne, ast.Lt: op.lt, ast.LtE: op.le, ast.Gt: op.gt, ast.GtE: op.ge,
    ast.In: lambda x, y: x in y, ast.NotIn: lambda x, y: x not in y, ast.Is: _is, ast.IsNot: _is_not,
}


# ---------------------------------------------------------------------------------------------
# Parse-time whitelist.

_EXPRESSION_NODES = (ast.Constant, ast.Name, ast.BinOp, ast.UnaryOp, ast.BoolOp, ast.Compare, ast.IfExp,
                     ast.Call, ast.Tuple, ast.List, ast.Subscript)
# Operator and context nodes appear as children of the nodes above; only these are allowed.
_PLAIN_NODES = tuple(OPERATORS) + (ast.And, ast.Or, ast.Load)
_CONSTANT_TYPES = (int, float, str, bool, type(None))

_REFUSED = {
    ast.Attribute: "attribute access (x.y) is not allowed", ast.Lambda: "lambda is not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed", ast.JoinedStr: "f-strings are not allowed",
    ast.FormattedValue: "f-strings are not allowed", ast.Starred: "unpacking (*) is not allowed",
    ast.ListComp: "comprehensions are not allowed", ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed", ast.GeneratorExp: "comprehensions are not allowed",
    ast.Dict: "dict literals are not allowed", ast.Set: "set literals are not allowed",
    ast.Slice: "slices are not allowed", ast.Await: "await is not allowed", ast.Yield: "yield is not allowed",
    ast.YieldFrom: "yield is not allowed", ast.keyword: "keyword arguments are not allowed",
}


def _refuse(source: str, node: ast.AST, what: str) -> ExpressionError:
    # The tree was parsed from the stripped text: shift columns back to the caller's text.
    col = getattr(node, "col_offset", None)
    lead = len(source) - len(source.lstrip())
    return ExpressionError(what, source, None if col is None or getattr(node, "lineno", 1) != 1
                           else col + 1 + lead)


def _constant_index(node: ast.AST) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) in (int, str)


def _check_node(source: str, node: ast.AST, parent: ast.AST | None) -> None:
    kind = type(node)
    if kind in _REFUSED:
        raise _refuse(source, node, _REFUSED[kind])
    if isinstance(node, _PLAIN_NODES):
        return
    if not isinstance(node, _EXPRESSION_NODES):
        raise _refuse(source, node, f"{kind.__name__} is not allowed")
    if isinstance(node, ast.Constant):
        if type(node.value) not in _CONSTANT_TYPES:
            raise _refuse(source, node, f"{type(node.value).__name__} literals are not allowed")
        if isinstance(node.value, float) and not math.isfinite(node.value):
            raise _refuse(source, node, "the number is too large")
    elif isinstance(node, ast.Name):
        called = isinstance(parent, ast.Call) and parent.func is node
        if node.id.startswith("_"):
            raise _refuse(source, node, f"names starting with '_' are not allowed ({node.id})")
        if called and node.id not in FUNCTIONS:
            raise _refuse(source, node, f"unknown function {node.id}()")
    elif isinstance(node, ast.Call):
        if isinstance(node.func, ast.Attribute):
            raise _refuse(source, node.func, _REFUSED[ast.Attribute])
        if not isinstance(node.func, ast.Name):
            raise _refuse(source, node, "only functions of the expression library may be called, by name")
        if node.keywords:
            raise _refuse(source, node.keywords[0], "keyword arguments are not allowed")
        if len(node.args) > MAX_LITERAL_ITEMS:
            raise _refuse(source, node, f"more than {MAX_LITERAL_ITEMS} arguments")
    elif isinstance(node, (ast.Tuple, ast.List)):
        if len(node.elts) > MAX_LITERAL_ITEMS:
            raise _refuse(source, node, f"a list of more than {MAX_LITERAL_ITEMS} items")
    elif isinstance(node, ast.Subscript):
        if not _constant_index(node.slice):
            raise _refuse(source, node, "only a constant index like x[0] or x['key'] is allowed")
    elif isinstance(node, ast.Compare):
        for cmp_op, right in zip(node.ops, node.comparators, strict=True):
            if isinstance(cmp_op, (ast.Is, ast.IsNot)) and not (
                    isinstance(right, ast.Constant) and right.value is None):
                raise _refuse(source, node, "'is' is only for comparing with None")


def _check_tree(source: str, tree: ast.Expression) -> frozenset[str]:
    """Walk the tree without recursion (a hostile tree must not exhaust the stack); return the names."""
    names: set[str] = set()
    stack: list[tuple[ast.AST, ast.AST | None, int]] = [(tree.body, None, 1)]
    while stack:
        node, parent, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _refuse(source, node, f"the expression is nested more than {MAX_DEPTH} levels deep")
        _check_node(source, node, parent)
        if isinstance(node, ast.Name) and not (isinstance(parent, ast.Call) and parent.func is node):
            names.add(node.id)
        stack.extend((child, node, depth + 1) for child in ast.iter_child_nodes(node))
    return frozenset(names)


# ---------------------------------------------------------------------------------------------
# Evaluation.

class _Evaluator(SimpleEval):
    """simpleeval with only the whitelisted node handlers, our operators, no implicit names
    (True/False/None are constants in the AST) and a per-evaluation budget."""

    def __init__(self, source: str, values: Mapping[str, Any]):
        super().__init__(operators=dict(OPERATORS), functions=dict(FUNCTIONS), names=values)
        self.expr = source
        self.nodes = {ast.Constant: self._eval_constant, ast.Name: self._eval_name,
                      ast.BinOp: self._eval_binop, ast.UnaryOp: self._eval_unaryop,
                      ast.BoolOp: self._eval_boolop, ast.Compare: self._eval_compare,
                      ast.IfExp: self._eval_ifexp, ast.Call: self._eval_call,
                      ast.Tuple: self._eval_sequence, ast.List: self._eval_sequence,
                      ast.Subscript: self._eval_subscript}
        self.steps = 0
        self.deadline = time.thread_time() + TIME_BUDGET_SECONDS

    def _eval(self, node):
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise LimitExceeded(f"more than {MAX_STEPS} steps")
        if time.thread_time() > self.deadline:
            raise LimitExceeded(f"took longer than {TIME_BUDGET_SECONDS} s of CPU time")
        return super()._eval(node)

    @staticmethod
    def _eval_constant(node):
        return _exact(node.value)

    def _eval_name(self, node):
        try:
            return _exact(self.names[node.id])
        except KeyError:
            raise ExpressionError(f"unknown name '{node.id}'", self.expr, node.col_offset + 1) from None

    def _eval_call(self, node):
        return self.functions[node.func.id](*(self._eval(a) for a in node.args))

    def _eval_sequence(self, node):
        items = [self._eval(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items


def _exact(value):
    """Floats (from a literal or a caller's value) become Decimal so arithmetic stays exact."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"not a finite number: {value!r}")
        return Decimal(repr(value))
    return value


class Expression:
    """A compiled, checked expression. Immutable; shared between threads and records."""

    __slots__ = ("_body", "names", "source")

    def __init__(self, source: str, body: ast.expr, names: frozenset[str]):
        self.source, self._body, self.names = source, body, names

    def __repr__(self) -> str:
        return f"Expression({self.source!r})"

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        """The value of the expression with `values` as its only names. Every failure is an
        ExpressionError with a plain message; the caller never sees a Python traceback."""
        try:
            with decimal.localcontext(_DECIMAL_CONTEXT):
                return _Evaluator(self.source, values).eval(self.source, self._body)
        except ExpressionError:
            raise
        except LimitExceeded as e:
            raise ExpressionError(f"evaluation stopped: {e}", self.source) from None
        except InvalidExpression as e:  # simpleeval's own refusals, should ours ever miss one
            raise ExpressionError(f"evaluation refused: {e}", self.source) from None
        except (ZeroDivisionError, decimal.DivisionByZero, decimal.DivisionUndefined):
            raise ExpressionError("division by zero", self.source) from None
        except decimal.Overflow:
            raise ExpressionError("the number is too large", self.source) from None
        except RecursionError:
            raise ExpressionError("the expression is nested too deeply", self.source) from None
        except MemoryError:
            raise ExpressionError("the result is too large", self.source) from None
        except (TypeError, ValueError, ArithmeticError, IndexError, KeyError) as e:
            message = _describe(e)
            if message != "division by zero":
                message = f"cannot evaluate: {message}"
            raise ExpressionError(message, self.source) from None
        except Exception as e:  # a last line: still a value with a message, never a traceback
            raise ExpressionError(f"cannot evaluate: {type(e).__name__}: {e}", self.source) from None


def _describe(e: Exception) -> str:
    if isinstance(e, IndexError):
        return "index out of range"
    if isinstance(e, KeyError):
        return f"no key {e.args[0]!r}" if e.args else "no such key"
    if isinstance(e, decimal.InvalidOperation):
        # 0 / 0 signals DivisionUndefined, which the C implementation raises as InvalidOperation.
        signals = e.args[0] if e.args and isinstance(e.args[0], list) else []
        if decimal.DivisionUndefined in signals:
            return "division by zero"
        return "invalid decimal operation"
    return str(e) or type(e).__name__


def compile_expression(source: str) -> Expression:
    """Parse and check `source`; the result is cached, since the same strings are evaluated for
    every record."""
    if not isinstance(source, str):
        raise ExpressionError(f"an expression must be text, not {type(source).__name__}", repr(source)[:40])
    return _compile(source)


@lru_cache(maxsize=4096)
def _compile(source: str) -> Expression:
    if len(source) > MAX_SOURCE_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_SOURCE_LENGTH} characters",
                              source[:40] + "...")
    if not source.strip():
        raise ExpressionError("the expression is empty", source)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. SyntaxWarning for `x is 1`; we refuse that ourselves
            tree = ast.parse(source.strip(), mode="eval")
    except SyntaxError as e:
        lead = len(source) - len(source.lstrip())
        at = e.offset + lead if e.offset and e.lineno == 1 else None
        raise ExpressionError(f"syntax error: {e.msg}", source, at) from None
    except (ValueError, RecursionError, MemoryError) as e:
        raise ExpressionError(f"syntax error: {_describe(e)}", source) from None
    names = _check_tree(source, tree)
    return Expression(source, tree.body, names)
