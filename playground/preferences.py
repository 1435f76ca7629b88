"""Ratings become DPO pairs: the preference file a rating task (or a set of playground comparisons) builds.

One rating is one rater's verdict on the outputs of one prompt, each scored 1 to 5. A rating whose verdict
is "best" gives a pair for each other output of that prompt whose score is at least `margin` below the
best output's: the best one preferred, the other not. So only outputs of the same prompt pair up. Ratings
that are a tie or "all bad" give none, and so do outputs that failed or have the same text as the best.
When raters disagree (one prefers A to B, another B to A on the same prompt), both pairs are left out. Each
left-out case is counted, so the preview can show what was dropped and why.

The lines are OpenAI's preference format: `input.messages` (the prompt as the raters saw it),
`preferred_output` and `non_preferred_output` (one assistant message each).
"""

import dataclasses
import json

MARGINS = range(0, 5)


@dataclasses.dataclass
class Pair:
    messages: list
    preferred: object  # Output
    rejected: object  # Output
    score_gap: int
    rating_ids: list

    def line(self):
        return {"input": {"messages": self.messages},
                "preferred_output": [{"role": "assistant", "content": self.preferred.text}],
                "non_preferred_output": [{"role": "assistant", "content": self.rejected.text}]}


def _prompt(rating):
    source = rating.item if rating.item_id else rating.comparison
    return ("item" if rating.item_id else "comparison", source.pk), list(source.messages)


def preference_pairs(ratings, margin=1):
    """(pairs, counts) from Rating rows (scores and outputs prefetched). `counts`: ratings read, ties,
    all_bad, no_gap (a best pick with no output at least `margin` below it), same_text, conflicting (pairs
    dropped because another rating prefers the other way), pairs."""
    if margin not in MARGINS:
        raise ValueError(f"margin must be a whole number from {MARGINS.start} to {MARGINS.stop - 1}; got {margin!r}")
    counts = {"ratings": 0, "ties": 0, "all_bad": 0, "no_gap": 0, "same_text": 0, "conflicting": 0, "pairs": 0}
    found = {}  # (prompt key, preferred output pk, rejected output pk) -> Pair
    for rating in ratings:
        counts["ratings"] += 1
        if rating.verdict == "tie":
            counts["ties"] += 1
            continue
        if rating.verdict == "all_bad":
            counts["all_bad"] += 1
            continue
        if rating.verdict != "best" or not rating.best_id:
            continue
        scores = {score.output_id: score for score in rating.scores.all()}
        best = scores.get(rating.best_id)
        if best is None or best.output.status != "done":
            continue
        key, messages = _prompt(rating)
        gave = same = False
        for score in scores.values():
            other = score.output
            if other.pk == best.output.pk or other.status != "done" or best.score - score.score < margin:
                continue
            if other.text.strip() == best.output.text.strip():
                counts["same_text"] += 1
                same = True
                continue
            gave = True
            pair = found.get((key, best.output.pk, other.pk))
            if pair is None:
                found[(key, best.output.pk, other.pk)] = Pair(messages, best.output, other, best.score - score.score,
                                                              [rating.pk])
            else:
                pair.rating_ids.append(rating.pk)
                pair.score_gap = max(pair.score_gap, best.score - score.score)
        if not gave and not same:
            counts["no_gap"] += 1
    pairs = []
    for (key, preferred, rejected), pair in found.items():
        if (key, rejected, preferred) in found:
            counts["conflicting"] += 1
            continue
        pairs.append(pair)
    counts["pairs"] = len(pairs)
    return pairs, counts


def preference_jsonl(pairs):
    return "".join(json.dumps(pair.line(), ensure_ascii=False) + "\n" for pair in pairs)
