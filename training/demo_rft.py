"""The reinforcement demo: the order number of a support message, answered as JSON, taught by a grader only.

Each line asks for the order number of one demo message (training/demo_data.py) as a JSON object under
the key `order_id`; the line holds no answer, only the number as the field `order_id`, which the grader
reads as `{{item.order_id}}`. The grader (`GRADER`) is a `multi`:

- `similar`: text_similarity (fuzzy_match) of the answer against `{"order_id": "<the number>"}`, so an
  answer that is nearly right scores nearly 1 and every sampled answer teaches something;
- `json`: a python grader that reads the first JSON value of the answer: 0 when there is none, 0.1 for a
  value without the key, and from 0.1 up with the right number (0.4), no other key (0.3) and nothing after
  the object (0.3). It never raises, so the `multi` never loses a reward to a grader error.

smollm2-135m copies numbers well but never answers in that form: greedy, it writes a sentence ("The order
number in this message is 38430."), a fenced block, or an object with more keys. Held-out prompts use
wordings the training lines never use (demo_data's `HELDOUT_WORDINGS`); one passes when the whole answer,
stripped, is a JSON object whose only key `order_id` holds the right number (`passes`), which is what the
`json` grader scores 1.

No Django inside: the engine's tests, the outcome test, the benchmark and `bootstrap_demo` share it.
"""

import json
import re

from training.demo_data import make_demo_data

KEY = "order_id"
INSTRUCTION = f'Reply with JSON only: the order number in this message, under the key "{KEY}".\n\n'
# The demo's spec for smollm2-135m. The outcome test (tests/training/test_rft_outcome.py) trains it on 72 of
# the training lines at a constant learning rate: 18 steps, not 27.
DEMO_SPEC = {"n_epochs": 1, "batch_size": 16, "num_generations": 4, "max_completion_length": 16,
             "temperature": 0.8, "learning_rate_multiplier": 10, "lora_r": 16, "lora_alpha": 32,
             "beta": 0.0, "loss_type": "dapo"}

JSON_CHECK_SOURCE = f'''import json


def grade(sample, item):
    text = sample["output_text"].strip()
    try:
        answer, end = json.JSONDecoder().raw_decode(text)
    except ValueError:
        return 0.0
    if not isinstance(answer, dict) or {KEY!r} not in answer:
        return 0.1
    score = 0.4 if str(answer[{KEY!r}]) == item[{KEY!r}] else 0.1
    if list(answer) == [{KEY!r}]:
        score += 0.3
    if end == len(text):
        score += 0.3
    return score
'''

GRADER = {
    "type": "multi",
    "name": "order_json",
    "graders": {
        "similar": {"type": "text_similarity", "name": "similar", "input": "{{sample.output_text}}",
                    "reference": '{"order_id": "{{item.order_id}}"}', "evaluation_metric": "fuzzy_match",
                    "pass_threshold": 1.0},
        "json": {"type": "python", "name": "json", "source": JSON_CHECK_SOURCE},
    },
    "calculate_output": "0.3 * similar + 0.7 * json",
}
# The held-out check as a grader: the eval of the demo (`eval_demo_rft`) passes an answer at 1.
PASS_CHECK = {**GRADER["graders"]["json"], "pass_threshold": 1.0}


# The `json` grader's own code, run here in plain Python (its source is a constant of this module).
_JSON_CHECK = {}
exec(JSON_CHECK_SOURCE, _JSON_CHECK)


def json_check(text, order_id):
    """The `json` grader's score of `text`."""
    return _JSON_CHECK["grade"]({"output_text": text}, {KEY: order_id})


def reward(text, order_id):
    """GRADER's reward, in plain Python (the bare GRPO script of bench/rft.py uses it)."""
    from rapidfuzz import fuzz

    reference = json.dumps({KEY: order_id})
    return 0.3 * fuzz.ratio(text, reference) / 100 + 0.7 * json_check(text, order_id)


def passes(text, order_id):
    """A held-out answer passes when it is, stripped, a JSON object whose one key `order_id` holds the right
    number (as a string or an integer): what the `json` grader scores 1."""
    try:
        answer = json.loads(text.strip())
    except ValueError:
        return False
    return isinstance(answer, dict) and list(answer) == [KEY] and str(answer[KEY]) == order_id


def _lines(rows):
    lines = []
    for row in rows:
        text = row["messages"][1]["content"]
        numbers = re.findall(r"\b\d{5}\b", text)
        if len(numbers) == 1:
            lines.append({"messages": [{"role": "user", "content": INSTRUCTION + text}], KEY: numbers[0]})
    return lines


def make_rft_data(seed=0, n_train=110, n_valid=16, n_heldout=50):
    """(training lines, validation lines, held-out lines): reinforcement lines with no answer, drawn from
    the demo messages that hold one order number (110, 24 and 96 of them for seed 0)."""
    train, valid, heldout = make_demo_data(seed, n_train=400, n_valid=100, n_heldout=400)
    sets = (_lines(train)[:n_train], _lines(valid)[:n_valid], _lines(heldout)[:n_heldout])
    for lines, wanted, what in zip(sets, (n_train, n_valid, n_heldout), ("training", "validation", "held-out"),
                                   strict=True):
        if len(lines) < wanted:
            raise ValueError(f"the demo has {len(lines)} {what} messages with one order number, not {wanted}")
    return sets
