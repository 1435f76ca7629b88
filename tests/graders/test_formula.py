"""The multi grader's calculate_output formula: parsed without eval(), computed on known scores."""

import math

import pytest

from graders.formula import FormulaError, evaluate, names, parse


def value(text, **scores):
    return evaluate(parse(text, scores), scores)


@pytest.mark.parametrize("text, expected", [
    ("1 + 2 * 3", 7),
    ("(1 + 2) * 3", 9),
    ("10 - 4 - 3", 3),
    ("8 / 4 / 2", 1),
    ("2 ^ 3 ^ 2", 512),  # right-associative: 2^(3^2)
    ("-2 ^ 2", -4),  # unary minus binds looser than ^
    ("2 ^ -1", 0.5),
    ("--3", 3),
    ("1.5e1 + .5", 15.5),
])
def test_it_follows_arithmetic_precedence(text, expected):
    assert value(text) == pytest.approx(expected)


def test_it_computes_the_functions():
    assert value("min(3, 1, 2) + max(4, 5)") == 6
    assert value("abs(-2) + floor(2.7) + ceil(2.1)") == 7
    assert value("exp(0) + sqrt(16) + log(1)") == 5
    assert value("log(exp(2))") == pytest.approx(2)


def test_it_weighs_grader_scores_by_their_keys():
    assert value("0.7 * accuracy + 0.3 * tone", accuracy=1.0, tone=0.5) == pytest.approx(0.85)
    assert names(parse("min(a, b) * c", {"a", "b", "c"})) == {"a", "b", "c"}


@pytest.mark.parametrize("text, position", [
    ("__import__('os')", 0),
    ("a.b", 1),
    ("a[0]", 1),
    ("a + ", 3),
    ("(a", 2),
    ("max", 0),
    ("pow(a, 2)", 0),
    ("a b", 2),
    ("a ** 2", 3),
    ("", 0),
])
def test_it_refuses_what_is_not_in_the_grammar_naming_the_position(text, position):
    with pytest.raises(FormulaError) as caught:
        parse(text, {"a"})
    assert caught.value.position == position
    assert (f"position {position}" in str(caught.value)) or text == ""


def test_it_refuses_a_name_that_is_not_a_grader_key():
    with pytest.raises(FormulaError, match="'b' at position 4 is not one of the graders"):
        parse("a + b", {"a"})


def test_it_checks_the_arity_of_one_argument_functions():
    with pytest.raises(FormulaError, match="takes 1 argument"):
        parse("sqrt(a, a)", {"a"})


@pytest.mark.parametrize("text", ["a / 0", "log(0)", "log(-1)", "sqrt(-1)", "exp(1000)", "(-8) ^ 0.5"])
def test_a_value_that_cannot_be_computed_is_a_formula_error(text):
    with pytest.raises(FormulaError):
        value(text, a=1.0)


def test_the_result_is_a_float():
    result = value("floor(a)", a=2.5)
    assert result == 2 and isinstance(result, float) and math.isfinite(result)
