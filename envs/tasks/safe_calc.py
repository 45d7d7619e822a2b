"""A small, safe arithmetic evaluator for the calculator tool: ``ast`` with a whitelist, never eval.

Accepted: integer and decimal literals, ``+ - * / // % **``, unary ``+``/``-`` and parentheses.
Refused, each with a :class:`CalcError` naming what was wrong: names, calls, attribute access,
subscripts, strings, comparisons, booleans, complex numbers, anything else the parser builds;
expressions over 200 characters or 64 syntax nodes; literals above 10**12 in size; powers whose
exponent exceeds 16 in size or whose base exceeds 10**6; any intermediate result above 10**15
in size; division or modulo by zero; results that are not real numbers.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

MAX_CHARS = 200
MAX_NODES = 64
MAX_LITERAL = 10**12
MAX_RESULT = 10**15
MAX_EXPONENT = 16
MAX_POWER_BASE = 10**6

Number = int | float

_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Number], Number]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}


class CalcError(ValueError):
    """The expression is not one the calculator evaluates; the message says why."""


def _check_size(value: Number, what: str) -> Number:
    if isinstance(value, complex) or not math.isfinite(value):
        raise CalcError(f"{what} is not a finite real number")
    if abs(value) > MAX_RESULT:
        raise CalcError(f"{what} is larger than {MAX_RESULT:.0e} in size")
    return value


def _eval(node: ast.AST) -> Number:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CalcError(f"{value!r} is not a number (only numbers and + - * / // % ** are allowed)")
        if abs(value) > MAX_LITERAL:
            raise CalcError(f"the number {value!r} is larger than {MAX_LITERAL:.0e} in size")
        return value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            if abs(right) > MAX_EXPONENT or abs(left) > MAX_POWER_BASE:
                raise CalcError(f"the power {left!r} ** {right!r} is too large (exponent at most "
                                f"{MAX_EXPONENT}, base at most {MAX_POWER_BASE:.0e} in size)")
            if left == 0 and right < 0:
                raise CalcError("division by zero (0 to a negative power)")
        if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
            raise CalcError("division by zero")
        return _check_size(_BINARY[type(node.op)](left, right), "the result")
    kind = type(node).__name__
    raise CalcError(f"{kind} is not allowed (only numbers, parentheses and + - * / // % **)")


def evaluate(expression: str) -> Number:
    """The value of an arithmetic ``expression`` (see the module docstring for what is accepted).

    Raises:
        CalcError: anything not accepted, with the reason.
        TypeError: ``expression`` is not a string.
    """
    if not isinstance(expression, str):
        raise TypeError(f"expression must be a string, got {type(expression).__name__}")
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("−", "-")
    if not text:
        raise CalcError("the expression is empty")
    if len(text) > MAX_CHARS:
        raise CalcError(f"the expression has {len(text)} characters, more than {MAX_CHARS}")
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise CalcError(f"not an arithmetic expression ({type(exc).__name__})") from None
    if sum(1 for _ in ast.walk(tree)) > MAX_NODES:
        raise CalcError(f"the expression has more than {MAX_NODES} parts")
    return _check_size(_eval(tree), "the result")


def format_number(value: Number) -> str:
    """``value`` as the calculator shows it: integers exactly, other numbers with 10 digits."""
    if isinstance(value, int):
        return str(value)
    if value.is_integer():
        return str(int(value))
    return f"{value:.10g}"
