"""Vote math on hand-made battles with known answers, and the leaderboard page and exports."""

import csv
import io
import json
import math

import pytest

from playground.leaderboard import (
    Battle,
    battles_from_verdict,
    bootstrap_bradley_terry,
    bradley_terry,
    head_to_head,
    krippendorff_alpha,
    mean_ci,
    win_rates,
)


def battles(a, b, a_wins, b_wins, ties=0):
    return [Battle(a, b, "a")] * a_wins + [Battle(a, b, "b")] * b_wins + [Battle(a, b, "tie")] * ties


def test_bradley_terry_recovers_known_strength_gaps():
    # P(x beats y) = 3/4 and P(y beats z) = 3/4 imply P(x beats z) = 9/10: an exact Bradley–Terry world.
    games = battles("x", "y", 30, 10) + battles("y", "z", 30, 10) + battles("x", "z", 90, 10)
    strength = bradley_terry(games)
    assert strength["x"] - strength["y"] == pytest.approx(400 * math.log10(3), abs=0.05)
    assert strength["x"] - strength["z"] == pytest.approx(400 * math.log10(9), abs=0.05)
    assert sum(strength.values()) / 3 == pytest.approx(1000, abs=1e-6)


def test_a_tie_counts_as_half_a_win_for_each_side():
    # 2 wins + 2 ties out of 4 = 3/4 points for x: the same gap as 3 wins in 4.
    with_ties = bradley_terry(battles("x", "y", 2, 0, ties=2))
    with_wins = bradley_terry(battles("x", "y", 3, 1))
    assert with_ties["x"] - with_ties["y"] == pytest.approx(with_wins["x"] - with_wins["y"], abs=0.05)
    only_ties = bradley_terry(battles("x", "y", 0, 0, ties=5))
    assert only_ties["x"] == pytest.approx(only_ties["y"], abs=1e-6)


def test_bootstrap_interval_holds_the_truth_and_narrows_with_more_battles():
    truth = 400 * math.log10(3)
    few = battles("x", "y", 6, 2)
    many = battles("x", "y", 600, 200)
    narrow, wide = bootstrap_bradley_terry(many, rounds=200), bootstrap_bradley_terry(few, rounds=200)
    low, high = narrow["x"][0] - narrow["y"][1], narrow["x"][1] - narrow["y"][0]
    assert low < truth < high
    assert (narrow["x"][1] - narrow["x"][0]) < (wide["x"][1] - wide["x"][0]) / 3
    assert bootstrap_bradley_terry(many, rounds=50, seed=1) == bootstrap_bradley_terry(many, rounds=50, seed=1)


def test_a_best_pick_beats_every_other_output_and_a_tie_ties_all_pairs():
    assert battles_from_verdict(["a", "b", "c"], "best", "b") == [Battle("b", "a", "a"), Battle("b", "c", "a")]
    assert battles_from_verdict(["a", "b", "c"], "all_bad") == [
        Battle("a", "b", "tie"), Battle("a", "c", "tie"), Battle("b", "c", "tie")]
    assert battles_from_verdict(["a", "b"], "best", None) == []


def test_win_rates_and_head_to_head_count_ties_as_half():
    games = battles("x", "y", 3, 1, ties=2) + battles("y", "z", 1, 0)
    rates = win_rates(games)
    assert rates["x"] == (4 / 6, 6) and rates["z"] == (0.0, 1)
    matrix = head_to_head(games)
    assert matrix["x"]["y"] == (4 / 6, 6) and matrix["y"]["x"] == (2 / 6, 6)


def test_krippendorff_alpha_matches_the_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, missing values.
    rows = {"A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
            "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
            "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
            "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]}
    units = {u: {c: v[u] for c, v in rows.items() if v[u] is not None} for u in range(12)}
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=0.001)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=0.001)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=0.001)
    assert krippendorff_alpha({1: {"a": 3}}) is None


def test_mean_score_interval_uses_students_t():
    mean, low, high = mean_ci([1, 2, 3, 4, 5])
    assert mean == 3 and high - mean == pytest.approx(2.776 * math.sqrt(2.5) / math.sqrt(5), abs=0.01)
    assert mean_ci([4]) == (4.0, None, None)


# The page and the exports ------------------------------------------------------


def _rate(user, snapshots_order, scores, verdict, best=None):
    from playground.models import Comparison, Output, Rating

    comparison = Comparison.objects.create(created_by=user, messages=[{"role": "user", "content": "hi"}],
                                           params={}, blind=True, status="finished")
    outputs = [Output.objects.create(comparison=comparison, position=i, snapshot_name=n, status="done", text=n)
               for i, n in enumerate(snapshots_order)]
    best_position = snapshots_order.index(best) if best else None
    Rating.save_for(user, outputs, dict(enumerate(scores)), {}, verdict, best_position, comparison=comparison)


def test_leaderboard_ranks_the_snapshot_picked_best(admin_client, admin_user):
    for _ in range(3):
        _rate(admin_user, ["model-b", "model-a"], [2, 5], "best", best="model-a")
    _rate(admin_user, ["model-a", "model-b"], [3, 3], "tie")
    page = admin_client.get("/playground/leaderboard/")
    assert page.status_code == 200
    html = page.content.decode()
    assert html.index("model-a") < html.index("model-b")
    rows = json.loads("[" + ",".join(admin_client.get(
        "/playground/leaderboard/export/?kind=leaderboard&format=jsonl").content.decode().splitlines()) + "]")
    top = rows[0]
    assert top["snapshot"] == "model-a" and top["best_picks"] == 3 and top["win_rate"] == pytest.approx(3.5 / 4)
    assert top["mean_score"] == pytest.approx(4.5)
    table = list(csv.DictReader(io.StringIO(admin_client.get(
        "/playground/leaderboard/export/?kind=ratings&format=csv").content.decode())))
    assert len(table) == 8 and {r["snapshot"] for r in table} == {"model-a", "model-b"}


def test_an_evaluator_exports_only_their_own_ratings(evaluator_client, evaluator_user, admin_user):
    _rate(admin_user, ["model-a", "model-b"], [5, 1], "best", best="model-a")
    _rate(evaluator_user, ["model-a", "model-b"], [2, 4], "best", best="model-b")
    body = evaluator_client.get("/playground/leaderboard/export/?kind=ratings&format=jsonl").content.decode()
    records = [json.loads(line) for line in body.splitlines()]
    assert {r["rater"] for r in records} == {"eve"} and len(records) == 2


def test_bad_export_parameters_are_refused_with_a_reason(admin_client):
    resp = admin_client.get("/playground/leaderboard/export/?format=xml")
    assert resp.status_code == 400 and b"format" in resp.content


FORMULAS = ["=HYPERLINK(\"http://x\",\"y\")", "+1+1", "-2+3", "@SUM(A1)", "\tcmd", "\rcmd"]


def test_the_csv_exports_write_user_text_that_starts_a_formula_as_text(admin_client, admin_user):
    from playground.models import Score

    _rate(admin_user, ["=cmd|' /C calc'!A0", "model-b"], [5, 1], "best", best="model-b")
    rated = Score.objects.order_by("pk")
    for score, comment in zip(rated, FORMULAS, strict=False):
        score.comment = comment
        score.save(update_fields=["comment"])
    table = list(csv.DictReader(io.StringIO(admin_client.get(
        "/playground/leaderboard/export/?kind=ratings&format=csv").content.decode())))
    assert sorted(r["comment"] for r in table) == sorted("'" + f for f in FORMULAS[:2])
    assert {r["snapshot"] for r in table} == {"'=cmd|' /C calc'!A0", "model-b"}
    assert {r["score"] for r in table} == {"5", "1"}
    board = list(csv.DictReader(io.StringIO(admin_client.get(
        "/playground/leaderboard/export/?kind=leaderboard&format=csv").content.decode())))
    assert {r["snapshot"] for r in board} == {"'=cmd|' /C calc'!A0", "model-b"}
    # The same ratings as JSONL keep the text as it was typed.
    lines = admin_client.get("/playground/leaderboard/export/?kind=ratings&format=jsonl").content.decode()
    assert sorted(json.loads(line)["comment"] for line in lines.splitlines()) == sorted(FORMULAS[:2])


@pytest.mark.parametrize("value, written", [(f, "'" + f) for f in FORMULAS] + [
    ("-0.25", "-0.25"), ("+3", "+3"), ("1e-05", "1e-05"), (-0.5, -0.5), ("a=b", "a=b"), ("", "")])
def test_a_csv_cell_that_would_start_a_formula_gets_a_quote(value, written):
    from config.spreadsheet import safe_cell

    assert safe_cell(value) == written


def test_the_leaderboard_is_computed_once_until_a_rating_changes(admin_client, admin_user, monkeypatch):
    from django.core.cache import cache

    from playground import leaderboard

    cache.clear()
    real, runs = leaderboard.bootstrap_bradley_terry, []

    def counted(*args, **kwargs):
        runs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(leaderboard, "bootstrap_bradley_terry", counted)
    _rate(admin_user, ["model-a", "model-b"], [5, 1], "best", best="model-a")
    for _ in range(2):
        assert admin_client.get("/playground/leaderboard/").status_code == 200
    assert len(runs) == 1
    _rate(admin_user, ["model-a", "model-b"], [2, 4], "best", best="model-b")
    page = admin_client.get("/playground/leaderboard/").content.decode()
    assert len(runs) == 2 and "2 ratings" in page
    export = admin_client.get("/playground/leaderboard/export/?kind=leaderboard&format=jsonl")
    assert len(export.content.decode().splitlines()) == 2 and len(runs) == 2  # the export reads the same entry
