"""How well a grader's scores agree with people's: rank correlations with 95 % intervals.

Pure functions over paired numbers (a human mean score and a grader score per item and snapshot):

- `spearman(x, y)`: Spearman's rho, its interval by Fisher's z with the Bonett–Wright (2000) standard
  error sqrt((1 + rho²/2) / (n − 3)); needs n ≥ 4.
- `kendall(x, y)`: Kendall's tau-b (ties in either list counted as tau-b does), its interval by Fisher's
  z with the Fieller–Hartley–Pearson (1957) standard error sqrt(0.437 / (n − 4)); needs n ≥ 5.
- `agreement(x, y)`: both, and a sentence on how far the grader can stand in for people.

A list with no spread (every score the same) has no rank correlation: the value is None, with why.
The intervals are normal approximations; with few pairs they are rough, which the sentence says.
"""

import math
from dataclasses import dataclass

Z95 = 1.959963984540054
MIN_PAIRS_TO_JUDGE = 10


@dataclass
class Correlation:
    value: float | None
    low: float | None
    high: float | None
    n: int
    note: str = ""


def _fisher_interval(r, se):
    if abs(r) >= 1.0:
        return r, r
    z = math.atanh(r)
    return math.tanh(z - Z95 * se), math.tanh(z + Z95 * se)


def _no_spread(x, y):
    return len(set(x)) < 2 or len(set(y)) < 2


def spearman(x, y):
    from scipy import stats

    n = len(x)
    if n != len(y):
        raise ValueError("x and y must hold the same number of values")
    if n < 2 or _no_spread(x, y):
        return Correlation(None, None, None, n, "no spread in the scores" if n >= 2 else "fewer than 2 pairs")
    rho = float(stats.spearmanr(x, y).statistic)
    if n < 4:
        return Correlation(rho, None, None, n, "an interval needs at least 4 pairs")
    low, high = _fisher_interval(rho, math.sqrt((1 + rho * rho / 2) / (n - 3)))
    return Correlation(rho, low, high, n)


def kendall(x, y):
    from scipy import stats

    n = len(x)
    if n != len(y):
        raise ValueError("x and y must hold the same number of values")
    if n < 2 or _no_spread(x, y):
        return Correlation(None, None, None, n, "no spread in the scores" if n >= 2 else "fewer than 2 pairs")
    tau = float(stats.kendalltau(x, y, variant="b").statistic)
    if n < 5:
        return Correlation(tau, None, None, n, "an interval needs at least 5 pairs")
    low, high = _fisher_interval(tau, math.sqrt(0.437 / (n - 4)))
    return Correlation(tau, low, high, n)


def verdict(rho, n):
    """A sentence on whether the grader can stand in for people, read from rho's interval."""
    if rho.value is None:
        return f"No verdict: {rho.note}."
    if n < MIN_PAIRS_TO_JUDGE or rho.low is None:
        return (f"Too few pairs ({n}) to say: rate at least {MIN_PAIRS_TO_JUDGE} outputs that the grader "
                "also scored.")
    if rho.low >= 0.7:
        return ("It can stand in for people here: it ranks outputs as people do, strongly (rho's interval "
                "stays above 0.7).")
    if rho.low >= 0.4:
        return ("It can screen outputs but not replace people: it agrees with them moderately (rho's "
                "interval stays above 0.4); check what it ranks high by hand.")
    if rho.low > 0:
        return ("It agrees with people only weakly (rho's interval is above 0 but reaches below 0.4): use it "
                "as a hint, not as a verdict.")
    if rho.high is not None and rho.high < 0:
        return "It ranks outputs against people's judgement (rho's interval is below 0): do not use it as is."
    return "It cannot stand in for people: its agreement with them is not distinguishable from none."


def agreement(x, y):
    """{n, spearman, kendall, verdict} for paired human scores `x` and grader scores `y`."""
    rho = spearman(x, y)
    tau = kendall(x, y)
    return {"n": len(x), "spearman": rho, "kendall": tau, "verdict": verdict(rho, len(x))}
