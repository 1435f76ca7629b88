"""The reinforcement demo's data and grader: what the outcome test and bench/rft.py rely on."""

import json

import pytest

from graders.run import grade_items
from training.demo_rft import GRADER, KEY, PASS_CHECK, make_rft_data, passes, reward

ANSWERS = ['{"order_id": "%s"}', '{\n  "order_id": "%s"\n}', '{"order_id": %s}', '{"order_id": "%s", "status": "x"}',
           '{"order_id": "%s"} and more', '{"order": "%s"}', "The order number in this message is %s.",
           '```json\n{"order_id": "%s"}\n```', '{"order_id": "12345"}', '[1, 2]', '{"order_id": "%s"']


def test_the_lines_hold_no_answer_and_the_number_their_message_holds():
    train, valid, heldout = make_rft_data()
    assert (len(train), len(valid), len(heldout)) == (110, 16, 50)
    for line in train + valid + heldout:
        assert [m["role"] for m in line["messages"]] == ["user"]
        assert line[KEY] in line["messages"][0]["content"] and len(line[KEY]) == 5
    prompts = {line["messages"][0]["content"] for line in train}
    assert not prompts & {line["messages"][0]["content"] for line in heldout}
    with pytest.raises(ValueError, match="held-out messages with one order number, not 500"):
        make_rft_data(n_heldout=500)


def test_the_plain_python_reward_is_the_graders_and_a_pass_scores_json_1():
    line = make_rft_data()[0][0]
    number = line[KEY]
    texts = [answer.replace("%s", number) for answer in ANSWERS]
    results = grade_items(GRADER, [(text, line) for text in texts])
    checks = grade_items(PASS_CHECK, [(text, line) for text in texts])
    for text, result, check in zip(texts, results, checks, strict=True):
        assert result.reward == pytest.approx(reward(text, number), abs=1e-9), text
        assert check.passed == passes(text, number) == (check.reward == 1.0), text
    assert [passes(text, number) for text in texts] == [True, True, True, False, False, False, False, False,
                                                        number == "12345", False, False]
    assert results[0].reward == pytest.approx(1.0) and results[6].reward < 0.2
    assert json.loads(texts[0]) == {KEY: number}
