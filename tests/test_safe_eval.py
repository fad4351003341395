"""The whitelisted evaluator: exact arithmetic, and fast, specific rejection of everything else."""

from __future__ import annotations

from fractions import Fraction

import pytest

from datawall.errors import DatawallError
from datawall.tasks.safe_eval import ExpressionError, Limits, numbers_in, parse_expression, safe_eval


def test_exact_arithmetic():
    assert safe_eval("1/3+1/3") == Fraction(2, 3)
    assert safe_eval("2+3*4-(5-1)") == 10
    assert safe_eval("-7//2") == -4 and safe_eval("-7%3") == 2
    assert safe_eval("2**10") == 1024 and safe_eval("2**-2") == Fraction(1, 4) and safe_eval("(-3)**3") == -27
    assert safe_eval(" 1_000 * 1.5 ") == 1500
    assert safe_eval("0.1+0.2") == Fraction(3, 10)  # decimals mean what they say
    assert safe_eval("1e3") == 1000


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("9**9**9**9", "exponent"),
        ("2**100000", "exponent"),
        ("10**13", "exceeds the limit"),
        ("2**40*2**40", "exceeds the limit"),
        ("(1/3)**40", "exceeds the limit"),
        ("1/7/7/7/7/7/7/7/7/7/7/7/7/7/7/7", "exceeds the limit"),
        ("999999*999999*999999", "exceeds the limit"),
        ("1" * 10**6, "characters long"),
        ("9" * 150, "exceeds the limit"),
        ("(" * 50 + "1" + ")" * 50, "nested deeper"),
        ("(" * 10**5 + "1", "characters long"),
        ("-" * 100 + "1", "nested deeper"),
        ("+".join("1" * 99), "nested deeper"),
        ("__import__('os').system('echo hi')", "not allowed"),
        ("a+1", "character 'a' is not allowed"),
        ("[1, 2]", "not allowed"),
        ("1 if 1 else 2", "not allowed"),
        ("lambda: 1", "not allowed"),
        ("1 < 2", "not allowed"),
        ("~1", "not allowed"),
        ("1/0", "division by zero"),
        ("5%0", "division by zero"),
        ("0**-1", "division by zero"),
        ("1e400", "not finite"),
        ("2**0.5", "integer exponents"),
        ("1+", "not an expression"),
        ("", "not an expression"),
        ("1 1", "not an expression"),
        ("0x10", "character 'x' is not allowed"),
        ("1e5e5", "not an expression"),
        ("1_e5", "not an expression"),
        ("e", "Name is not allowed"),
    ],
)
def test_rejects_with_a_specific_error(source, needle):
    with pytest.raises(ExpressionError, match=needle):
        safe_eval(source)


def test_error_type_is_a_datawall_and_value_error():
    with pytest.raises(DatawallError):
        safe_eval("9**9**9**9")
    with pytest.raises(ValueError):
        safe_eval("open('x')")
    with pytest.raises(ExpressionError, match="string"):
        safe_eval(12)  # type: ignore[arg-type]


def test_limits_restrict_operators_and_literals():
    limits = Limits(ops=frozenset("+-*/"), unary_minus=False, floats=False)
    assert safe_eval("4/(3/6)", limits) == 8
    for source, needle in (("2**3", "'\\*\\*'"), ("7//2", "'//'"), ("-1+2", "unary"), ("1.5*2", "not an integer")):
        with pytest.raises(ExpressionError, match=needle):
            safe_eval(source, limits)
    with pytest.raises(ExpressionError, match="characters"):
        safe_eval("1+1", Limits(max_chars=2))
    with pytest.raises(ExpressionError, match="more than 10 nodes"):
        safe_eval("(1+2)*(3+4)+(5+6)", Limits(max_nodes=10))
    assert numbers_in(parse_expression("(9-4)*5-3")) == [9, 4, 5, 3]
