"""multi graders, the graders/run response shape, grade_items against run_grader, and what importing
graders costs."""

import json
import pathlib
import subprocess
import sys

import pytest

from graders import ERROR_FLAGS, GraderError, JudgeAnswer, grade_items, grader_passed, run_grader

EXACT = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
         "operation": "eq"}
CONTAINS = {"type": "string_check", "name": "contains", "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}", "operation": "ilike"}
LENGTH = {"type": "python", "name": "short", "source": "def grade(sample, item):\n"
                                                         "    return 1.0 if len(sample['output_text']) <= 5 else 0.5\n"}
SENTIMENT = {"type": "label_model", "name": "sentiment", "model": "judge-2",
             "input": [{"role": "user", "content": "{{sample.output_text}}"}], "labels": ["good", "bad"],
             "passing_labels": ["good"]}


def multi(formula, **graders):
    return {"type": "multi", "name": "combined", "graders": graders, "calculate_output": formula}


def good_judge(model, messages, params, choices):
    return JudgeAnswer("good", prompt_tokens=5, completion_tokens=1)


def test_multi_combines_its_graders_by_the_formula_and_reports_each_score():
    grader = multi("0.5 * exact + 0.25 * contains + 0.25 * short", exact=EXACT, contains=CONTAINS, short=LENGTH)
    result = run_grader(grader, "The answer is Paris", {"answer": "paris"})
    assert result.sub_rewards == {"exact": 0.0, "contains": 1.0, "short": 0.5}
    assert result.reward == pytest.approx(0.375)
    assert result.metadata["scores"] == result.sub_rewards


def test_multi_sums_the_judges_token_usage():
    grader = multi("a + b", a=SENTIMENT, b=dict(SENTIMENT, name="again"))
    result = run_grader(grader, "nice", judge=good_judge)
    assert result.reward == 2.0
    assert result.token_usage_per_model == {"judge-2": {"prompt_tokens": 10, "completion_tokens": 2,
                                                        "total_tokens": 12}}


def test_a_formula_that_divides_by_zero_sets_the_formula_error_and_gives_zero():
    result = run_grader(multi("1 / exact", exact=EXACT), "Rome", {"answer": "Paris"})
    assert (result.reward, result.error, result.passed) == (0.0, "formula_parse_error", None)
    assert "division by zero" in result.messages[0]


def test_a_sub_graders_error_gives_the_multi_grader_zero_and_its_flag():
    result = run_grader(multi("exact + contains", exact=EXACT, contains=CONTAINS), "Paris", {})
    assert (result.reward, result.error) == (0.0, "invalid_variable_error")


def test_the_response_has_every_field_and_error_flag_of_openais_graders_run():
    response = run_grader(EXACT, "Paris", {"answer": "Paris"}).as_response(sampled_model_name="ft:attune-1")
    assert set(response) == {"reward", "sub_rewards", "model_grader_token_usage_per_model", "metadata"}
    metadata = response["metadata"]
    assert set(metadata) == {"name", "type", "execution_time", "scores", "token_usage", "sampled_model_name",
                             "errors"}
    assert (metadata["name"], metadata["type"], metadata["sampled_model_name"]) == ("exact", "string_check",
                                                                                    "ft:attune-1")
    assert list(metadata["errors"]) == [
        "formula_parse_error", "invalid_variable_error", "model_grader_parse_error", "model_grader_refusal_error",
        "model_grader_server_error", "model_grader_server_error_details", "python_grader_runtime_error",
        "python_grader_runtime_error_details", "python_grader_server_error", "python_grader_server_error_type",
        "sample_parse_error", "truncated_observation_error", "unresponsive_reward_error", "other_error"]
    assert not any(metadata["errors"][flag] for flag in ERROR_FLAGS)
    assert metadata["execution_time"] >= 0
    json.dumps(response)


def test_grade_items_gives_the_same_results_as_run_grader_item_by_item():
    grader = multi("min(exact, short) + contains", exact=EXACT, contains=CONTAINS, short=LENGTH)
    pairs = [("Paris", {"answer": "Paris"}), ("It is Paris", {"answer": "paris"}), ("Rome", {}),
             ("Lyon", {"answer": "Lyon"})]
    batch = grade_items(grader, pairs)
    single = [run_grader(grader, sample, item) for sample, item in pairs]
    assert [(r.reward, r.sub_rewards, r.passed, r.error) for r in batch] == \
           [(r.reward, r.sub_rewards, r.passed, r.error) for r in single]
    assert [r.reward for r in batch] == [2.0, 1.0, 0.0, 2.0]


def test_run_grader_refuses_a_grader_that_does_not_validate():
    with pytest.raises(GraderError):
        run_grader({"type": "string_check", "name": "x"}, "sample")


def test_grader_passed_follows_each_types_rule():
    assert grader_passed(EXACT, 1.0) and not grader_passed(EXACT, 0.99)
    assert grader_passed(SENTIMENT, 1.0) and not grader_passed(SENTIMENT, 0.0)
    assert grader_passed(dict(LENGTH, pass_threshold=0.7), 0.7) and not grader_passed(dict(LENGTH, pass_threshold=0.7),
                                                                                       0.69)
    assert grader_passed(LENGTH, 0.5) and not grader_passed(LENGTH, 0.49)
    score_model = {"type": "score_model", "range": [0, 10]}
    assert grader_passed(score_model, 5) and not grader_passed(score_model, 4.9)


def test_importing_graders_loads_no_heavy_library():
    code = ("import sys, graders\n"
            "heavy = {'torch', 'transformers', 'nltk', 'sacrebleu', 'rouge_score', 'rapidfuzz', 'numpy', 'django'}\n"
            "print(sorted(heavy & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=pathlib.Path(__file__).resolve().parents[2])
    assert done.stdout.strip() == "[]"
