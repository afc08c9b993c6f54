"""Safe expressions: the docs/security.md payload set is refused at parse time or stopped by a limit,
quickly; normal definitions (the deviation formula) evaluate exactly."""
from __future__ import annotations

import datetime as dt
from decimal import Decimal as D

import pytest

from helpers_timing import cpu_seconds
from keel.errors import KeelError
from keel.expressions import FUNCTIONS, MAX_SOURCE_LENGTH, ExpressionError, compile_expression

DEVIATION = "(actual - expected) / expected if expected else 0"


def run(source: str, **values):
    return compile_expression(source).evaluate(values)


# ---------------------------------------------------------------------------------------------
# Hostile input: (payload, refused at parse time?, words the message must contain)

PAYLOADS = [
    ("().__class__.__base__.__subclasses__()", True, "attribute access"),
    ('"{0.__class__}".format(x)', True, "attribute access"),
    ("x.__dict__", True, "attribute access"),
    ("x.real", True, "attribute access"),
    ("__import__('os')", True, "'_'"),
    ("__builtins__", True, "'_'"),
    ("lambda: 1", True, "lambda"),
    ("[x for x in range(10**9)]", True, "comprehension"),
    ("sum(x for x in range(10**9))", True, "comprehension"),
    ("{k: 1 for k in 'ab'}", True, "comprehension"),
    ("getattr(x, '__class__')", True, "unknown function getattr()"),
    ("eval('1')", True, "unknown function eval()"),
    ("open('/etc/passwd')", True, "unknown function open()"),
    ("type(x)", True, "unknown function type()"),
    ("f'{x.__class__}'", True, "f-strings"),
    ("f'{x}'", True, "f-strings"),
    ("(y := 1)", True, ":="),
    ("max(*x)", True, "unpacking"),
    ("round(x, ndigits=2)", True, "keyword"),
    ("x[1:2]", True, "index"),
    ("x[y]", True, "index"),
    ("{'a': 1}", True, "dict"),
    ("{1, 2}", True, "set"),
    ("x is 1", True, "None"),
    ("b'abc'", True, "bytes"),
    ("1j", True, "complex"),
    ("[" + ", ".join(["1"] * 101) + "]", True, "more than 100"),
    ("-" * 200 + "1", True, "nested"),
    ("import os", True, "syntax error"),
    ("x = 1", True, "syntax error"),
    ("1; 2", True, "syntax error"),
    ("1\x00", True, "syntax error"),
    ("9**9**9", False, "too large"),
    ("2**100000", False, "too large"),
    ("'a'*10**9", False, "longer than"),
    ("10**9*'a'", False, "longer than"),
    ("[1]*10**9", False, "longer than"),
    ("('a'*100000)+('a'*100000)", False, "longer than"),
    ("'%099999999d' % 1", False, "only for numbers"),
    ("int(decimal('1e999999999'))", False, "more than 100 digits"),
    ("decimal('1e999999') * 10", False, "too large"),
    ("decimal('9') ** 999999999", False, "too large"),
]


@pytest.mark.parametrize("source,at_parse,words", PAYLOADS, ids=[p[0][:40] for p in PAYLOADS])
def test_payload_is_refused_quickly(source, at_parse, words):
    with cpu_seconds() as spent, pytest.raises(ExpressionError) as err:
        compile_expression(source).evaluate({"x": (1, 2), "y": 0})
    assert spent.seconds < 1.0  # refused up front: building 9**9**9 or a 1 GB string takes far longer
    assert words in str(err.value)
    assert err.value.source == source or len(source) > MAX_SOURCE_LENGTH
    if at_parse:  # never got as far as an Expression
        with pytest.raises(ExpressionError):
            compile_expression(source)


def test_expression_error_is_a_keel_error_with_place_and_source():
    with pytest.raises(KeelError) as err:
        compile_expression("a + b.__class__")
    e = err.value
    assert isinstance(e, ExpressionError)
    assert e.source == "a + b.__class__"
    assert e.position == 5  # the attribute access, 1-based
    assert "at column 5" in str(e) and "'a + b.__class__'" in str(e)


def test_position_counts_leading_whitespace():
    with pytest.raises(ExpressionError) as err:
        compile_expression("   x.y")
    assert err.value.position == 4


def test_source_length_is_capped():
    long = "1" + " + 1" * (MAX_SOURCE_LENGTH // 4)
    with pytest.raises(ExpressionError, match="longer than 1000 characters"):
        compile_expression(long)


@pytest.mark.parametrize("source", ["", "   ", None, 42, ["a"]])
def test_empty_or_non_text_is_an_error(source):
    with pytest.raises(ExpressionError):
        compile_expression(source)


def test_step_and_time_budgets_stop_evaluation(monkeypatch):
    import keel.expressions as ex

    e = compile_expression("a + a + a + a")
    monkeypatch.setattr(ex, "MAX_STEPS", 3)
    with pytest.raises(ExpressionError, match="more than 3 steps"):
        e.evaluate({"a": 1})
    monkeypatch.setattr(ex, "MAX_STEPS", 10_000)
    monkeypatch.setattr(ex, "TIME_BUDGET_SECONDS", -1.0)  # already past the deadline at the first node
    with pytest.raises(ExpressionError, match="took longer than"):
        e.evaluate({"a": 1})


# ---------------------------------------------------------------------------------------------
# Runtime errors are values with a message, never a raw traceback

@pytest.mark.parametrize("source,values,words", [
    ("missing + 1", {}, "unknown name 'missing'"),
    ("a / b", {"a": 1, "b": 0}, "division by zero"),
    ("a / b", {"a": D(0), "b": D(0)}, "division by zero"),
    ("a // b", {"a": 1, "b": 0}, "division by zero"),
    ("a + b", {"a": D(1), "b": "x"}, "cannot evaluate: unsupported operand"),
    ("a < b", {"a": 1, "b": "x"}, "cannot evaluate"),
    ("a[5]", {"a": [1, 2]}, "index out of range"),
    ("a['k']", {"a": {}}, "no key 'k'"),
    ("lower(a)", {"a": 3}, "lower() needs text"),
    ("year(a)", {"a": "2025-01-01"}, "year() needs a date"),
    ("decimal(a)", {"a": "abc"}, "not a number"),
    ("decimal(a)", {"a": "NaN"}, "not a finite number"),
    ("round(a, 99)", {"a": 1}, "between -28 and 28"),
    ("max()", {}, "cannot evaluate"),
    ("len(a)", {"a": 3}, "cannot evaluate"),
])
def test_runtime_errors_are_expression_errors(source, values, words):
    with pytest.raises(ExpressionError) as err:
        compile_expression(source).evaluate(values)
    assert words in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__


# ---------------------------------------------------------------------------------------------
# Normal use

def test_deviation_formula_is_exact_decimal():
    e = compile_expression(DEVIATION)
    assert e.names == frozenset({"actual", "expected"})
    result = e.evaluate({"actual": D("920000.00"), "expected": D("800000.00")})
    assert result == D("0.15") and isinstance(result, D)
    assert e.evaluate({"actual": D(5), "expected": D(0)}) == 0
    assert e.evaluate({"actual": D(5), "expected": None}) == 0
    # A third of a target: Decimal to 28 digits, not a float.
    third = e.evaluate({"actual": 4, "expected": 3})
    assert isinstance(third, D) and str(third) == "0.3333333333333333333333333333"


def test_threshold_condition_against_a_float_literal_is_exact():
    flagged = compile_expression("abs(deviation) > 0.15")
    assert flagged.names == frozenset({"deviation"})
    assert flagged.evaluate({"deviation": D("-0.16")}) is True
    assert flagged.evaluate({"deviation": D("0.15")}) is False
    assert run("0.1 + 0.2 == 0.3") is True
    assert run("a * 0.15", a=D(800000)) == D("120000.00")


@pytest.mark.parametrize("source,values,expected", [
    ("1 / 4", {}, D("0.25")),
    ("2 ** -1", {}, D("0.5")),
    ("2 ** 10", {}, 1024),
    ("a + 1", {"a": D("1.10")}, D("2.10")),
    ("a * 3", {"a": D("0.1")}, D("0.3")),
    ("a", {"a": 0.1}, D("0.1")),                    # a float value is made exact too
    ("7 // 2 + 7 % 2", {}, 4),
    ("-a", {"a": D(2)}, D(-2)),
    ("a if a > 0 else -a", {"a": -3}, 3),
    ("a and b or 'none'", {"a": 1, "b": ""}, "none"),
    ("not a", {"a": None}, True),
    ("a is None", {"a": None}, True),
    ("a is not None", {"a": 0}, True),
    ("1 < a <= 3", {"a": 3}, True),
    ("kind in ('new', 'upsell')", {"kind": "upsell"}, True),
    ("kind not in ['renewal']", {"kind": "new"}, True),
    ("tags[0]", {"tags": ["a", "b"]}, "a"),
    ("tags[-1]", {"tags": ["a", "b"]}, "b"),
    ("name + '!'", {"name": "目标"}, "目标!"),
])
def test_operators(source, values, expected):
    result = run(source, **values)
    assert result == expected and type(result) is type(expected)


def test_names_are_variables_not_functions():
    e = compile_expression("round(max(a, b) * rate, 2) + len(lower(name)) + if_null(x, y)")
    assert e.names == frozenset({"a", "b", "rate", "name", "x", "y"})
    # A field may share a name with a function: the two namespaces are separate.
    assert compile_expression("year(year)").names == frozenset({"year"})
    assert run("year(year)", year=dt.date(2025, 10, 18)) == 2025


@pytest.mark.parametrize("source,values,expected", [
    ("abs(a)", {"a": D("-1.5")}, D("1.5")),
    ("abs(a)", {"a": None}, None),
    ("min(a, b)", {"a": 3, "b": D("2.5")}, D("2.5")),
    ("max(a)", {"a": [1, 5, 2]}, 5),
    ("round(a)", {"a": D("2.5")}, 3),                 # half up, not banker's rounding
    ("round(a)", {"a": D("-2.5")}, -3),
    ("round(a, 2)", {"a": D("1.005")}, D("1.01")),
    ("round(a, 2)", {"a": 3}, D("3.00")),
    ("round(a)", {"a": None}, None),
    ("len(a)", {"a": "目标敏捷"}, 4),
    ("len(a)", {"a": None}, 0),
    ("coalesce(a, b, 3)", {"a": None, "b": None}, 3),
    ("coalesce(a, b)", {"a": None, "b": None}, None),
    ("if_null(a, 0)", {"a": None}, 0),
    ("if_null(a, 0)", {"a": D(4)}, D(4)),
    ("lower(a)", {"a": "CRO"}, "cro"),
    ("upper(a)", {"a": None}, None),
    ("contains(a, 'up')", {"a": "upsell"}, True),
    ("contains(a, 'x')", {"a": ["x", "y"]}, True),
    ("contains(a, 'x')", {"a": None}, False),
    ("startswith(a, 'KR')", {"a": "KR-1"}, True),
    ("startswith(a, 'KR')", {"a": None}, False),
    ("decimal(a)", {"a": " 800000.50 "}, D("800000.50")),
    ("decimal(a)", {"a": 3}, D(3)),
    ("int(a)", {"a": D("-7.9")}, -7),
    ("int(a)", {"a": "12"}, 12),
    ("days_between(a, b)", {"a": dt.date(2025, 10, 18), "b": dt.date(2025, 10, 25)}, 7),
    ("days_between(a, b)", {"a": dt.datetime(2025, 10, 25, 23, 0), "b": dt.date(2025, 10, 18)}, -7),
    ("days_between(a, b)", {"a": None, "b": dt.date(2025, 10, 18)}, None),
    ("year(a) * 100 + month(a)", {"a": dt.datetime(2025, 10, 18, 9, 30)}, 202510),
])
def test_registry_functions(source, values, expected):
    result = run(source, **values)
    assert result == expected and type(result) is type(expected)


def test_today_is_the_utc_date():
    before = dt.datetime.now(dt.UTC).date()
    value = run("today()")
    after = dt.datetime.now(dt.UTC).date()
    assert type(value) is dt.date and before <= value <= after
    assert run("days_between(today(), d) >= 0", d=after) is True


def test_compiled_expressions_are_cached_and_values_do_not_leak():
    e = compile_expression("a + 1")
    assert compile_expression("a + 1") is e
    assert e.evaluate({"a": 1}) == 2
    assert e.evaluate({"a": 41}) == 42
    with pytest.raises(ExpressionError, match="unknown name 'a'"):
        e.evaluate({})


def test_evaluation_does_not_mutate_the_values():
    values = {"tags": ["a"], "n": D(1)}
    run("tags + ['b']", **values)
    assert values == {"tags": ["a"], "n": D(1)}


def test_the_decimal_context_of_the_caller_does_not_change_results():
    import decimal

    with decimal.localcontext(decimal.Context(prec=3, traps=[])):
        assert str(run("1 / 3")) == "0.3333333333333333333333333333"
        with pytest.raises(ExpressionError, match="division by zero"):
            run("a / 0", a=D(1))


# ---------------------------------------------------------------------------------------------
# The registry is reviewed: adding, removing or swapping a callable must change this snapshot.

REGISTRY_SNAPSHOT = {
    "abs": "keel.expressions._abs",
    "coalesce": "keel.expressions.coalesce",
    "contains": "keel.expressions.contains",
    "days_between": "keel.expressions.days_between",
    "decimal": "keel.expressions._to_decimal",
    "if_null": "keel.expressions.if_null",
    "int": "keel.expressions._to_int",
    "len": "keel.expressions._len",
    "lower": "keel.expressions.lower",
    "max": "builtins.max",
    "min": "builtins.min",
    "month": "keel.expressions.month",
    "working_days": "keel.expressions.working_days",
    "add_working_days": "keel.expressions.add_working_days",
    "round": "keel.expressions._round",
    "startswith": "keel.expressions.startswith",
    "today": "keel.expressions.today",
    "upper": "keel.expressions.upper",
    "year": "keel.expressions.year",
}


def test_function_registry_snapshot():
    actual = {name: f"{fn.__module__}.{fn.__qualname__}" for name, fn in FUNCTIONS.items()}
    assert sorted(actual) == sorted(REGISTRY_SNAPSHOT)
    assert actual == REGISTRY_SNAPSHOT


def test_function_registry_is_read_only():
    with pytest.raises(TypeError):
        FUNCTIONS["system"] = print  # type: ignore[index]


# ---- working days (the calendar of workflow SLAs) ------------------------------------------------

@pytest.mark.parametrize("source, expected", [
    # National Day 2025: 1-8 October are holidays, Saturday 11 October is a working day (调休)
    ("working_days(start, end)", 1),                       # 30 Sep -> 9 Oct: only the 9th counts
    ("working_days(end, start)", -1),                      # same order as days_between: end earlier -> negative
    ("working_days(start, start)", 0),
    ("add_working_days(start, 1)", dt.date(2025, 10, 9)),
    ("add_working_days(start, 3)", dt.date(2025, 10, 11)),  # the working Saturday
    ("add_working_days(end, -1)", dt.date(2025, 9, 30)),
    ("add_working_days(start, 2.0)", dt.date(2025, 10, 10)),
    ("working_days(none, end)", None),
    ("add_working_days(none, 3)", None),
])
def test_working_day_functions_follow_the_chinese_calendar(source, expected):
    values = {"start": dt.date(2025, 9, 30), "end": dt.date(2025, 10, 9), "none": None}
    assert compile_expression(source).evaluate(values) == expected


@pytest.mark.parametrize("source, message", [
    ("add_working_days(start, 1.5)", "whole number"),
    ("working_days(start, 'x')", "needs a date"),
    ("working_days(start, add_working_days(start, 5000))", "more than"),
])
def test_working_day_functions_refuse_bad_arguments_with_a_message(source, message):
    with pytest.raises(ExpressionError, match=message):
        compile_expression(source).evaluate({"start": dt.date(2025, 9, 30)})
