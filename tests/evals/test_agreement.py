"""The agreement math on hand-made scores with known answers."""

import math

import pytest

from evals.agreement import agreement, kendall, spearman

# Spearman's textbook example (Wikipedia, "Spearman's rank correlation coefficient"): IQ against hours of
# TV a week; rho = -29/165.
IQ = [106, 100, 86, 101, 99, 103, 97, 113, 112, 110]
TV = [7, 27, 2, 50, 28, 29, 20, 12, 6, 17]


def test_perfectly_concordant_scores_correlate_at_one():
    x = [1, 2, 3, 4, 5, 6]
    y = [0.1, 0.2, 0.35, 0.5, 0.8, 0.9]
    assert spearman(x, y).value == pytest.approx(1.0)
    assert kendall(x, y).value == pytest.approx(1.0)
    assert spearman(x, y).low == pytest.approx(1.0) and spearman(x, y).high == pytest.approx(1.0)


def test_reversed_scores_correlate_at_minus_one():
    x = [1, 2, 3, 4, 5, 6]
    y = [6, 5, 4, 3, 2, 1]
    assert spearman(x, y).value == pytest.approx(-1.0)
    assert kendall(x, y).value == pytest.approx(-1.0)


def test_the_textbook_spearman_example():
    rho = spearman(IQ, TV)
    assert rho.value == pytest.approx(-29 / 165)
    # Fisher z with the Bonett-Wright standard error, worked by hand.
    se = math.sqrt((1 + rho.value ** 2 / 2) / (10 - 3))
    assert (rho.low, rho.high) == pytest.approx((math.tanh(math.atanh(-29 / 165) - 1.959964 * se),
                                                 math.tanh(math.atanh(-29 / 165) + 1.959964 * se)), abs=1e-6)
    assert rho.low == pytest.approx(-0.7278, abs=1e-4) and rho.high == pytest.approx(0.5145, abs=1e-4)


def test_kendall_tau_b_counts_ties_in_both_lists():
    # 4 concordant pairs, none discordant, one pair tied in x and one tied in y: 4 / sqrt(5 * 5).
    assert kendall([1, 2, 2, 3], [1, 3, 2, 3]).value == pytest.approx(0.8)


def test_kendall_interval_uses_fiellers_standard_error():
    tau = kendall(IQ, TV)
    assert tau.value == pytest.approx(-5 / 45)
    se = math.sqrt(0.437 / (10 - 4))
    assert tau.low == pytest.approx(math.tanh(math.atanh(-1 / 9) - 1.959964 * se), abs=1e-6)
    assert tau.high == pytest.approx(math.tanh(math.atanh(-1 / 9) + 1.959964 * se), abs=1e-6)


def test_scores_without_spread_have_no_correlation():
    result = agreement([3, 3, 3, 3, 3], [0.1, 0.5, 0.2, 0.9, 0.4])
    assert result["spearman"].value is None and result["kendall"].value is None
    assert "no spread" in result["verdict"]


def test_the_verdict_needs_enough_pairs_and_reads_the_interval():
    assert "Too few pairs (6)" in agreement([1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 5, 6])["verdict"]
    many = list(range(30))
    assert "can stand in for people" in agreement(many, [v + 0.5 for v in many])["verdict"]
    assert "against people's judgement" in agreement(many, many[::-1])["verdict"]
    noise = [7, 1, 9, 3, 0, 8, 2, 6, 4, 5, 11, 10]
    weak = agreement(list(range(12)), noise)  # rho 0.39, its interval reaches below 0
    assert weak["spearman"].low < 0 < weak["spearman"].value
    assert "cannot stand in" in weak["verdict"]


def test_unequal_lists_are_refused():
    with pytest.raises(ValueError):
        spearman([1, 2], [1])
