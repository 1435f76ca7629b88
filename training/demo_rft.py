"""The reinforcement demo: the support intents of the demo data, answered as JSON, taught by a grader only.

The system prompt lists the labels and shows the form of the answer; the lines hold no answer, only the
right label as the field `intent`, which the grader reads as `{{item.intent}}`. The grader (`GRADER`) is
a `multi`: a python grader that checks the answer is a JSON object with the one key `intent` holding one
of the labels, and a `string_check` of the whole answer against `{"intent": "<the right label>"}`.
Held-out prompts use wordings the training lines never use (demo_data's `HELDOUT_WORDINGS`); one passes
when the whole greedy answer, stripped, is that JSON object with the right label (`passes`).

No Django inside: the engine's tests, the outcome test, the benchmark and `bootstrap_demo` share it.
"""

import json

from training.demo_data import INTENTS, make_demo_data

LABELS = sorted(INTENTS)
SYSTEM_PROMPT = 'Reply with JSON only, like {"intent": "refund"}. Labels: ' + ", ".join(LABELS) + "."

JSON_CHECK_SOURCE = f'''import json

LABELS = {LABELS!r}


def grade(sample, item):
    try:
        answer = json.loads(sample["output_text"].strip())
    except ValueError:
        return 0.0
    if isinstance(answer, dict) and list(answer) == ["intent"] and answer["intent"] in LABELS:
        return 1.0
    return 0.0
'''

GRADER = {
    "type": "multi",
    "name": "intent_json",
    "graders": {
        "json": {"type": "python", "name": "json", "source": JSON_CHECK_SOURCE},
        "label": {"type": "string_check", "name": "label", "input": "{{sample.output_text}}",
                  "reference": '{"intent": "{{item.intent}}"}', "operation": "eq"},
    },
    "calculate_output": "0.3 * json + 0.7 * label",
}


def reward(text, intent):
    """GRADER's reward, in plain Python (the bare GRPO script of bench/rft.py uses it)."""
    try:
        answer = json.loads(text.strip())
    except ValueError:
        answer = None
    shaped = isinstance(answer, dict) and list(answer) == ["intent"] and answer["intent"] in LABELS
    return 0.3 * shaped + 0.7 * (text == json.dumps({"intent": intent}))


def passes(text, intent):
    """A held-out answer passes when it is, stripped, the JSON object {"intent": <the right label>}."""
    try:
        answer = json.loads(text.strip())
    except ValueError:
        return False
    return isinstance(answer, dict) and list(answer) == ["intent"] and answer["intent"] == intent


def line(user_text, intent):
    return {"messages": [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user_text}],
            "intent": intent}


def make_rft_data(seed=0, n_train=64, n_valid=16, n_heldout=50):
    """(training lines, validation lines, held-out lines): reinforcement lines with no answer."""
    train, valid, heldout = make_demo_data(seed, n_train=n_train, n_valid=n_valid, n_heldout=n_heldout)
    return ([line(r["messages"][1]["content"], r["messages"][-1]["content"]) for r in train],
            [line(r["messages"][1]["content"], r["messages"][-1]["content"]) for r in valid],
            [line(r["messages"][1]["content"], r["expected"]) for r in heldout])
