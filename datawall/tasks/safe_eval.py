"""A whitelisted arithmetic evaluator for untrusted text (model output): never eval/exec.

Only numbers, + - * / // % ** (each op can be switched off), unary minus and parentheses are allowed.
Evaluation is exact (fractions.Fraction). Every limit is checked before the work it bounds: the text's
length and characters before parsing, the node count and depth before evaluating, and the size of a
power before computing it, so '9**9**9**9' or a megabyte of input is rejected in microseconds.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

from datawall.errors import DatawallError

_BINOPS: dict[type[ast.operator], tuple[str, Callable[[Fraction, Fraction], Fraction]]] = {
    ast.Add: ("+", operator.add),
    ast.Sub: ("-", operator.sub),
    ast.Mult: ("*", operator.mul),
    ast.Div: ("/", operator.truediv),
    ast.FloorDiv: ("//", operator.floordiv),
    ast.Mod: ("%", operator.mod),
    ast.Pow: ("**", operator.pow),
}
_CHARS = frozenset("0123456789+-*/%(). \t\n_eE")


class ExpressionError(DatawallError, ValueError):
    """The expression is malformed, uses something not allowed, or exceeds a limit."""


@dataclass(frozen=True)
class Limits:
    """What an expression may contain and how big it may get."""

    max_chars: int = 200
    max_nodes: int = 128
    max_depth: int = 32
    max_abs: int = 10**12  # bound on |value| and on the denominator of every intermediate result
    max_exponent: int = 64
    ops: frozenset[str] = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    unary_minus: bool = True
    floats: bool = True


DEFAULT_LIMITS = Limits()


def _check_text(source: str, limits: Limits) -> None:
    if not isinstance(source, str):
        raise ExpressionError(f"expression must be a string, got {type(source).__name__}")
    if len(source) > limits.max_chars:
        raise ExpressionError(f"expression is {len(source)} characters long (limit {limits.max_chars})")
    bad = sorted(set(source) - _CHARS)
    if bad:
        raise ExpressionError(f"character {bad[0]!r} is not allowed in an expression")
    depth = 0
    for ch in source:  # the parser recurses on parentheses: bound nesting before it runs
        depth += (ch == "(") - (ch == ")")
        if depth > limits.max_depth:
            raise ExpressionError(f"parentheses nested deeper than {limits.max_depth}")


def _check_tree(node: ast.AST, limits: Limits) -> None:
    count, stack = 0, [(node, 1)]
    while stack:
        n, depth = stack.pop()
        count += 1
        if count > limits.max_nodes:
            raise ExpressionError(f"expression has more than {limits.max_nodes} nodes")
        if depth > limits.max_depth:
            raise ExpressionError(f"expression is nested deeper than {limits.max_depth}")
        if isinstance(n, ast.BinOp):
            symbol = _BINOPS.get(type(n.op), ("?",))[0]
            if symbol not in limits.ops:
                raise ExpressionError(f"operator {symbol!r} is not allowed")
            stack += [(n.left, depth + 1), (n.right, depth + 1)]
        elif isinstance(n, ast.UnaryOp):
            if not (isinstance(n.op, ast.USub) and limits.unary_minus):
                raise ExpressionError("unary operator is not allowed")
            stack.append((n.operand, depth + 1))
        elif isinstance(n, ast.Constant):
            v = n.value
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ExpressionError(f"constant {v!r} is not a number")
            if isinstance(v, float) and not limits.floats:
                raise ExpressionError(f"constant {v!r} is not an integer")
        else:
            raise ExpressionError(f"{type(n).__name__} is not allowed in an expression")


def parse_expression(source: str, limits: Limits = DEFAULT_LIMITS) -> ast.expr:
    """Parse and validate `source`; the returned tree is safe to pass to evaluate()."""
    _check_text(source, limits)
    try:
        tree = ast.parse(source.strip(), mode="eval").body
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise ExpressionError(f"not an expression: {getattr(e, 'msg', e)}") from None
    _check_tree(tree, limits)
    return tree


def _bounded(x: Fraction, limits: Limits) -> Fraction:
    if abs(x.numerator) > limits.max_abs * x.denominator or x.denominator > limits.max_abs:
        raise ExpressionError(f"an intermediate value exceeds the limit of {limits.max_abs:g}")
    return x


def _power(base: Fraction, exp: Fraction, limits: Limits) -> Fraction:
    if exp.denominator != 1:
        raise ExpressionError("only integer exponents are allowed")
    e = abs(exp.numerator)
    if e > limits.max_exponent:
        raise ExpressionError(f"exponent {exp} exceeds the limit of {limits.max_exponent}")
    if base == 0 and exp < 0:
        raise ExpressionError("division by zero")
    # bit_length bounds log2 of numerator and denominator, so the result's size is known before computing it.
    bits = max(abs(base.numerator).bit_length(), base.denominator.bit_length()) - 1
    if bits * e > limits.max_abs.bit_length():
        raise ExpressionError(f"a power exceeds the limit of {limits.max_abs:g}")
    return base**exp


def evaluate(node: ast.expr, limits: Limits = DEFAULT_LIMITS) -> Fraction:
    """Exact value of a tree from parse_expression(); every intermediate is checked against the limits."""
    if isinstance(node, ast.Constant):
        v = node.value
        if isinstance(v, float) and not math.isfinite(v):
            raise ExpressionError("constant is not finite")
        return _bounded(Fraction(repr(v)) if isinstance(v, float) else Fraction(v), limits)  # 0.1 means 1/10
    if isinstance(node, ast.UnaryOp):
        return -evaluate(node.operand, limits)
    if isinstance(node, ast.BinOp):
        left, right = evaluate(node.left, limits), evaluate(node.right, limits)
        if isinstance(node.op, ast.Pow):
            return _bounded(_power(left, right, limits), limits)
        if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod) and right == 0:
            raise ExpressionError("division by zero")
        return _bounded(_BINOPS[type(node.op)][1](left, right), limits)
    raise ExpressionError(f"{type(node).__name__} is not allowed in an expression")


def numbers_in(node: ast.expr) -> list[Fraction]:
    """The numeric literals of a validated tree, left to right."""
    out: list[Fraction] = []
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Constant):
            out.append(Fraction(n.value))
        elif isinstance(n, ast.BinOp):
            stack += [n.right, n.left]
        elif isinstance(n, ast.UnaryOp):
            stack.append(n.operand)
    return out


def safe_eval(source: str, limits: Limits = DEFAULT_LIMITS) -> Fraction:
    """Evaluate an arithmetic expression exactly, or raise ExpressionError."""
    return evaluate(parse_expression(source, limits), limits)
