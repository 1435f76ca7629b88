"""Vote math: from ratings to a leaderboard.

- Mean score per snapshot with a 95 % confidence interval (Student's t).
- Battles from best-picks, as in Chatbot Arena: in a rating of n outputs,
  the best one beats each of the others; "tie" and "all bad" make every
  pair a tie.
- Win rate: (wins + ½ ties) / battles.
- Bradley–Terry strength on the Elo scale (400 · log10 odds, centred on
  1000), fitted by maximum likelihood with scipy's trust-region Newton, ties counted as
  half a win each way (Arena's `compute_mle_elo` duplicates tied battles,
  one win for each side); confidence intervals from a bootstrap over the
  battles (multinomial resampling of identical battles, as Arena does).
- Krippendorff's alpha (interval, ordinal or nominal) for agreement
  between raters on the same outputs.
- A head-to-head matrix: how often the row snapshot beat the column one.

Pure functions over plain data; `leaderboard_rows(ratings)` reads the
database rows and puts them together for the pages and the exports.
"""

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

SCALE, BASE, INIT = 400.0, 10.0, 1000.0
# A faint prior: it pins the free constant and keeps an undefeated snapshot's strength finite (about
# +1400 instead of infinity); with tens of battles its pull on the others is far below one Elo point.
RIDGE = 1e-3


@dataclass(frozen=True)
class Battle:
    a: str
    b: str
    winner: str  # "a" | "b" | "tie"


def battles_from_verdict(names, verdict, best=None):
    """The pairwise battles one rating implies. `names`: the snapshots rated, in the order shown."""
    names = list(dict.fromkeys(names))  # the same snapshot twice in one rating fights nobody
    if verdict == "best" and best in names:
        return [Battle(best, other, "a") for other in names if other != best]
    if verdict in ("tie", "all_bad"):
        return [Battle(names[i], names[j], "tie") for i in range(len(names)) for j in range(i + 1, len(names))]
    return []


def mean_ci(values, confidence=0.95):
    """(mean, low, high); the interval is None with fewer than two values."""
    from scipy import stats

    values = np.asarray(list(values), dtype=float)
    if values.size == 0:
        return None, None, None
    mean = float(values.mean())
    if values.size < 2:
        return mean, None, None
    sem = float(stats.sem(values))
    if sem == 0:
        return mean, mean, mean
    low, high = stats.t.interval(confidence, values.size - 1, loc=mean, scale=sem)
    return mean, float(low), float(high)


def _aggregate(battles):
    """Identical battles counted once with a weight: (a, b, outcome) -> count."""
    return Counter((b.a, b.b, b.winner) for b in battles)


def _fit(models, rows, weights):
    """Maximise the Bradley–Terry likelihood for weighted (i, j, y) rows, y = P(i beats j) target."""
    from scipy.optimize import minimize
    from scipy.special import expit

    i_idx, j_idx, y = rows
    k = len(models)

    def loss(theta):
        p = expit(theta[i_idx] - theta[j_idx])
        eps = 1e-12
        nll = -np.sum(weights * (y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))
        grad_z = weights * (p - y)
        grad = np.bincount(i_idx, grad_z, minlength=k) - np.bincount(j_idx, grad_z, minlength=k)
        return nll + RIDGE * theta @ theta, grad + 2 * RIDGE * theta

    def hessian(theta):
        p = expit(theta[i_idx] - theta[j_idx])
        curvature = weights * p * (1 - p)
        h = np.zeros((k, k))
        np.add.at(h, (i_idx, i_idx), curvature)
        np.add.at(h, (j_idx, j_idx), curvature)
        np.add.at(h, (i_idx, j_idx), -curvature)
        np.add.at(h, (j_idx, i_idx), -curvature)
        return h + 2 * RIDGE * np.eye(k)

    # Newton steps in a trust region: a few iterations even when one snapshot never lost, where
    # first-order methods crawl along the flat likelihood.
    result = minimize(loss, np.zeros(k), jac=True, hess=hessian, method="trust-exact")
    theta = result.x - result.x.mean()
    return {m: INIT + SCALE * float(theta[n]) / math.log(BASE) for n, m in enumerate(models)}


def _design(models, counted):
    """Rows for the fit: a win as y=1, a tie as one half win each way (y=0.5 with double weight)."""
    index = {m: n for n, m in enumerate(models)}
    i_idx, j_idx, y, keys = [], [], [], []
    for (a, b, outcome) in counted:
        i_idx.append(index[a])
        j_idx.append(index[b])
        y.append({"a": 1.0, "b": 0.0, "tie": 0.5}[outcome])
        keys.append((a, b, outcome))
    return (np.array(i_idx, dtype=int), np.array(j_idx, dtype=int), np.array(y)), keys


def bradley_terry(battles, models=None):
    """{snapshot: strength on the Elo scale}; a 75 % win rate is a gap of 400·log10(3) ≈ 191."""
    counted = _aggregate(battles)
    models = sorted(set(models or []) | {b.a for b in battles} | {b.b for b in battles})
    if not counted:
        return {m: INIT for m in models}
    rows, keys = _design(models, counted)
    return _fit(models, rows, np.array([counted[k] for k in keys], dtype=float))


def bootstrap_bradley_terry(battles, rounds=200, seed=0, confidence=0.95, models=None):
    """{snapshot: (low, high)}: percentiles of the strengths refitted on battles drawn with replacement."""
    counted = _aggregate(battles)
    models = sorted(set(models or []) | {b.a for b in battles} | {b.b for b in battles})
    if not counted:
        return {m: (None, None) for m in models}
    rows, keys = _design(models, counted)
    counts = np.array([counted[k] for k in keys], dtype=float)
    total = int(counts.sum())
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(total, counts / total, size=rounds)
    fits = np.array([[fit[m] for m in models] for fit in (_fit(models, rows, w.astype(float)) for w in draws)])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(fits, [tail, 100 - tail], axis=0)
    return {m: (float(low[n]), float(high[n])) for n, m in enumerate(models)}


def win_rates(battles):
    """{snapshot: (win rate with ties as half, number of battles)}."""
    points, games = defaultdict(float), Counter()
    for b in battles:
        games[b.a] += 1
        games[b.b] += 1
        if b.winner == "tie":
            points[b.a] += 0.5
            points[b.b] += 0.5
        else:
            points[b.a if b.winner == "a" else b.b] += 1
    return {m: (points[m] / games[m], games[m]) for m in games}


def head_to_head(battles):
    """{row: {column: (row's win rate against column with ties as half, battles)}}."""
    points, games = defaultdict(float), Counter()
    for b in battles:
        for x, y, score in ((b.a, b.b, {"a": 1, "b": 0, "tie": 0.5}[b.winner]),
                            (b.b, b.a, {"a": 0, "b": 1, "tie": 0.5}[b.winner])):
            points[(x, y)] += score
            games[(x, y)] += 1
    out = defaultdict(dict)
    for (x, y), n in games.items():
        out[x][y] = (points[(x, y)] / n, n)
    return dict(out)


def krippendorff_alpha(units, level="interval"):
    """Agreement between raters. `units`: {unit: {rater: value}}; units with one value are skipped.

    None when there is nothing to compare (fewer than two values in every
    unit, or a single value used throughout).
    """
    pairable = [list(v.values()) for v in units.values() if len(v) >= 2]
    if not pairable:
        return None
    values = sorted({x for unit in pairable for x in unit})
    index = {v: n for n, v in enumerate(values)}
    k = len(values)
    coincidence = np.zeros((k, k))
    for unit in pairable:
        m = len(unit)
        for i, x in enumerate(unit):
            for j, y in enumerate(unit):
                if i != j:
                    coincidence[index[x], index[y]] += 1.0 / (m - 1)
    n_c = coincidence.sum(axis=1)
    n = n_c.sum()
    v = np.array(values, dtype=float)
    if level == "nominal":
        delta = 1.0 - np.eye(k)
    elif level == "interval":
        delta = (v[:, None] - v[None, :]) ** 2
    elif level == "ordinal":
        cumulative = np.cumsum(n_c)
        delta = np.zeros((k, k))
        for c in range(k):
            for d in range(k):
                lo, hi = min(c, d), max(c, d)
                between = cumulative[hi] - (cumulative[lo - 1] if lo > 0 else 0)
                delta[c, d] = (between - (n_c[c] + n_c[d]) / 2) ** 2
    else:
        raise ValueError(f"level must be nominal, ordinal or interval; got {level!r}")
    expected = (np.outer(n_c, n_c) * delta).sum()
    if expected == 0:
        return None
    return float(1.0 - (n - 1) * (coincidence * delta).sum() / expected)


# From the database ----------------------------------------------------------


def rating_battles(ratings):
    """Battles from Rating rows (with scores and outputs prefetched)."""
    battles = []
    for rating in ratings:
        names = [s.output.snapshot_name for s in rating.scores.all()]
        best = rating.best.snapshot_name if rating.best_id else None
        battles.extend(battles_from_verdict(names, rating.verdict, best))
    return battles


def leaderboard_rows(ratings, bootstrap_rounds=100, seed=0):
    """One row per snapshot, strongest first, from an iterable of Rating rows."""
    ratings = list(ratings)
    scores = defaultdict(list)
    best_picks, appearances = Counter(), Counter()
    for rating in ratings:
        names = set()
        for score in rating.scores.all():
            scores[score.output.snapshot_name].append(score.score)
            names.add(score.output.snapshot_name)
        appearances.update(names)
        if rating.verdict == "best" and rating.best_id:
            best_picks[rating.best.snapshot_name] += 1
    battles = rating_battles(ratings)
    models = sorted(scores)
    strength = bradley_terry(battles, models)
    intervals = bootstrap_bradley_terry(battles, rounds=bootstrap_rounds, seed=seed, models=models)
    wins = win_rates(battles)
    rows = []
    for name in models:
        mean, low, high = mean_ci(scores[name])
        rate, n_battles = wins.get(name, (None, 0))
        rows.append({
            "snapshot": name, "n_ratings": len(scores[name]), "mean_score": mean, "score_ci_low": low,
            "score_ci_high": high, "win_rate": rate, "n_battles": n_battles, "best_picks": best_picks[name],
            "best_pick_rate": best_picks[name] / appearances[name] if appearances[name] else None,
            "bt_strength": strength.get(name), "bt_ci_low": intervals.get(name, (None, None))[0],
            "bt_ci_high": intervals.get(name, (None, None))[1],
        })
    rows.sort(key=lambda r: (-(r["bt_strength"] or 0), -(r["mean_score"] or 0), r["snapshot"]))
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
    return rows, battles


def task_agreement(ratings, level="interval"):
    """Krippendorff's alpha over one task's scores: a unit is one output, a coder one rater."""
    units = defaultdict(dict)
    for rating in ratings:
        for score in rating.scores.all():
            units[score.output_id][rating.rater_id] = score.score
    return krippendorff_alpha(units, level)
