"""score_model and label_model with a stand-in judge: a plain function that returns fixed answers."""

import pytest

from graders import JudgeAnswer, JudgeError, run_grader


class FixedJudge:
    """Answers every call with `text` and records what it was asked."""

    def __init__(self, text="", refusal=None, error=None):
        self.text, self.refusal, self.error, self.calls = text, refusal, error, []

    def __call__(self, model, messages, params, choices):
        self.calls.append({"model": model, "messages": messages, "params": params, "choices": choices})
        if self.error:
            raise self.error
        return JudgeAnswer(self.text, prompt_tokens=12, completion_tokens=3, refusal=self.refusal)


def score_model(**fields):
    return {"type": "score_model", "name": "tone", "model": "judge-1",
            "input": [{"role": "system", "content": "Rate the answer from 0 to 1."},
                      {"role": "user", "content": [{"type": "input_text", "text": "Question: {{item.q}}"},
                                                   {"type": "input_text", "text": "Answer: {{sample.output_text}}"}]}],
            **fields}


def label_model(**fields):
    return {"type": "label_model", "name": "sentiment", "model": "judge-2",
            "input": [{"role": "user", "content": "Classify: {{sample.output_text}}"}],
            "labels": ["positive", "neutral", "negative"], "passing_labels": ["positive", "neutral"], **fields}


def test_score_model_sends_the_rendered_messages_and_sampling_params_to_the_judge():
    judge = FixedJudge("0.8")
    grader = score_model(sampling_params={"temperature": 0, "seed": 7, "max_completions_tokens": 16,
                                          "reasoning_effort": "high"})
    result = run_grader(grader, "Fine, thanks.", {"q": "How are you?"}, judge=judge)
    assert result.reward == pytest.approx(0.8)
    (call,) = judge.calls
    assert call["model"] == "judge-1" and call["choices"] is None
    assert call["messages"] == [{"role": "system", "content": "Rate the answer from 0 to 1."},
                                {"role": "user", "content": "Question: How are you?\nAnswer: Fine, thanks."}]
    assert call["params"] == {"max_completion_tokens": 16, "seed": 7, "temperature": 0}


@pytest.mark.parametrize("text, score", [("Score: 7 out of 10", 7), ('{"score": 3.5}', 3.5),
                                         ('{"steps": [], "result": 9}', 9), ("  2.25\n", 2.25)])
def test_score_model_reads_the_first_number_or_a_json_score(text, score):
    result = run_grader(score_model(range=[0, 10]), "x", {"q": "?"}, judge=FixedJudge(text))
    assert result.reward == score


def test_score_model_without_a_number_is_a_parse_error():
    result = run_grader(score_model(), "x", {"q": "?"}, judge=FixedJudge("I cannot say."))
    assert (result.reward, result.error, result.passed) == (0.0, "model_grader_parse_error", None)


def test_score_model_clamps_a_score_outside_its_range():
    result = run_grader(score_model(), "x", {"q": "?"}, judge=FixedJudge("1.7"))
    assert (result.reward, result.error) == (1.0, None)
    assert "outside" in result.messages[0]


def test_score_model_passes_at_its_threshold_or_the_middle_of_its_range():
    assert run_grader(score_model(pass_threshold=0.9), "x", {"q": "?"}, judge=FixedJudge("0.8")).passed is False
    assert run_grader(score_model(range=[1, 7]), "x", {"q": "?"}, judge=FixedJudge("4")).passed is True
    assert run_grader(score_model(range=[1, 7]), "x", {"q": "?"}, judge=FixedJudge("3.9")).passed is False


def test_a_judge_server_failure_is_a_server_error_with_its_details():
    result = run_grader(score_model(), "x", {"q": "?"}, judge=FixedJudge(error=JudgeError("503 overloaded")))
    assert (result.reward, result.error) == (0.0, "model_grader_server_error")
    assert result.errors["model_grader_server_error_details"] == "503 overloaded"


def test_no_judge_at_all_is_a_server_error_not_an_exception():
    assert run_grader(score_model(), "x", {"q": "?"}).error == "model_grader_server_error"


def test_a_refusal_is_a_refusal_error():
    result = run_grader(score_model(), "x", {"q": "?"}, judge=FixedJudge("", refusal="I can't help with that."))
    assert result.error == "model_grader_refusal_error"


def test_token_usage_is_counted_per_judge_model():
    result = run_grader(score_model(), "x", {"q": "?"}, judge=FixedJudge("1"))
    assert result.token_usage_per_model == {"judge-1": {"prompt_tokens": 12, "completion_tokens": 3,
                                                        "total_tokens": 15}}
    response = result.as_response()
    assert response["model_grader_token_usage_per_model"]["judge-1"]["total_tokens"] == 15
    assert response["metadata"]["token_usage"] == 15


def test_label_model_passes_the_labels_to_the_judge_as_its_choices():
    judge = FixedJudge("neutral")
    result = run_grader(label_model(), "It is fine.", judge=judge)
    assert judge.calls[0]["choices"] == ["positive", "neutral", "negative"]
    assert judge.calls[0]["params"] == {}
    assert (result.reward, result.passed) == (1.0, True)


def test_label_model_gives_zero_for_a_label_that_does_not_pass():
    result = run_grader(label_model(), "Awful.", judge=FixedJudge(' "Negative" \n'))
    assert (result.reward, result.passed, result.error) == (0.0, False, None)


def test_label_model_answer_outside_the_labels_is_a_parse_error():
    result = run_grader(label_model(), "Hm.", judge=FixedJudge("mixed"))
    assert (result.reward, result.error) == (0.0, "model_grader_parse_error")
