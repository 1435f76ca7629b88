"""string_check, text_similarity and templates, on hand-made samples with known answers."""

import json

import pytest

from graders import run_grader


def check(operation, reference, sample, item=None):
    grader = {"type": "string_check", "name": "check", "input": "{{sample.output_text}}",
              "reference": reference, "operation": operation}
    return run_grader(grader, sample, item)


def similarity(metric, sample, reference, **fields):
    grader = {"type": "text_similarity", "name": "sim", "input": "{{sample.output_text}}",
              "reference": "{{item.reference}}", "evaluation_metric": metric, **fields}
    return run_grader(grader, sample, {"reference": reference})


def test_string_check_eq_matches_only_the_exact_text():
    assert check("eq", "{{item.answer}}", "Paris", {"answer": "Paris"}).reward == 1.0
    assert check("eq", "{{item.answer}}", "paris", {"answer": "Paris"}).reward == 0.0


def test_string_check_ne_is_the_opposite_of_eq():
    assert check("ne", "Paris", "Lyon").reward == 1.0
    assert check("ne", "Paris", "Paris").reward == 0.0


def test_string_check_like_finds_the_reference_inside_the_input_with_case():
    assert check("like", "Paris", "The capital is Paris.").reward == 1.0
    assert check("like", "paris", "The capital is Paris.").reward == 0.0


def test_string_check_ilike_matches_ignoring_case():
    assert check("ilike", "PARIS", "The capital is Paris.").reward == 1.0
    assert check("ilike", "Lyon", "The capital is Paris.").reward == 0.0


def test_string_check_passes_only_at_one():
    assert check("eq", "a", "a").passed is True
    assert check("eq", "a", "b").passed is False


def test_item_paths_with_indexes_render_and_non_strings_render_as_json():
    grader = {"type": "string_check", "name": "t", "input": "{{item.meta.tags[1]}}|{{item.n}}|{{item.meta}}",
              "reference": 'b|3|{"tags": ["a", "b"]}', "operation": "eq"}
    assert run_grader(grader, "", {"meta": {"tags": ["a", "b"]}, "n": 3}).reward == 1.0


def test_output_json_paths_render_when_the_sample_is_json():
    grader = {"type": "string_check", "name": "t", "input": "{{sample.output_json.answer.city}}",
              "reference": "{{item.city}}", "operation": "eq"}
    result = run_grader(grader, json.dumps({"answer": {"city": "Paris"}}), {"city": "Paris"})
    assert (result.reward, result.error) == (1.0, None)


def test_output_json_of_a_sample_that_is_not_json_is_a_sample_parse_error():
    grader = {"type": "string_check", "name": "t", "input": "{{sample.output_json.answer}}", "reference": "x",
              "operation": "eq"}
    result = run_grader(grader, "Paris, I think", {})
    assert (result.reward, result.error, result.passed) == (0.0, "sample_parse_error", None)
    assert result.errors["sample_parse_error"] is True


def test_a_missing_item_field_is_an_invalid_variable_error_naming_it():
    result = check("eq", "{{item.answer}}", "Paris", {"question": "capital?"})
    assert (result.reward, result.error) == (0.0, "invalid_variable_error")
    assert "{{item.answer}}" in result.messages[0]


def test_an_index_past_the_end_is_an_invalid_variable_error():
    assert check("eq", "{{item.options[5]}}", "a", {"options": ["a"]}).error == "invalid_variable_error"


def test_output_tools_and_choices_render_from_a_sample_dict():
    grader = {"type": "string_check", "name": "t", "input": "{{sample.output_tools[0].function.name}}",
              "reference": "get_weather", "operation": "eq"}
    sample = {"output_text": "", "output_tools": [{"type": "function", "function": {"name": "get_weather",
                                                                                     "arguments": "{}"}}]}
    assert run_grader(grader, sample).reward == 1.0
    assert run_grader(grader, "plain text").error == "invalid_variable_error"
    choices = {"type": "string_check", "name": "c", "input": "{{sample.choices}}", "reference": "[]",
               "operation": "eq"}
    assert run_grader(choices, "plain text").reward == 1.0


def test_fuzzy_match_of_identical_strings_is_one_and_of_disjoint_strings_zero():
    assert similarity("fuzzy_match", "hello world", "hello world").reward == 1.0
    assert similarity("fuzzy_match", "abc", "xyz").reward == 0.0
    assert similarity("fuzzy_match", "abcd", "abce").reward == pytest.approx(0.75)


def test_bleu_of_identical_text_is_one():
    assert similarity("bleu", "the cat sat on the mat", "the cat sat on the mat").reward == 1.0
    assert similarity("bleu", "dogs bark loudly", "the cat sat on the mat").reward < 0.1


def test_gleu_counts_shared_ngrams():
    assert similarity("gleu", "the cat sat", "the cat sat").reward == 1.0
    # hypothesis n-grams (1..4): 3+2+1 = 6, reference: 6; shared: the, cat, "the cat" = 3 → min(3/6, 3/6)
    assert similarity("gleu", "the cat ran", "the cat sat").reward == pytest.approx(0.5)


def test_rouge_1_is_the_f_measure_of_shared_words():
    # 2 of 3 words shared each way: precision = recall = 2/3
    assert similarity("rouge_1", "the cat sat", "the cat ran").reward == pytest.approx(2 / 3)
    # bigrams: the-cat, cat-sat, sat-on against the-cat, cat-sat: P 2/3, R 1, F 0.8
    assert similarity("rouge_2", "the cat sat on", "the cat sat").reward == pytest.approx(0.8)


def test_rouge_l_reads_the_longest_common_subsequence():
    assert similarity("rouge_l", "a b c d", "a c d").reward == pytest.approx(2 * 0.75 * 1 / 1.75)
    assert similarity("rouge_5", "one two three four five", "one two three four five").reward == 1.0


def test_text_similarity_passes_at_its_threshold():
    assert similarity("fuzzy_match", "abcd", "abce", pass_threshold=0.75).passed is True
    assert similarity("fuzzy_match", "abcd", "abce", pass_threshold=0.8).passed is False


@pytest.mark.slow
def test_cosine_of_identical_text_is_one_and_of_unrelated_text_below_related():
    same = similarity("cosine", "The cat sat on the mat.", "The cat sat on the mat.").reward
    related = similarity("cosine", "The cat sat on the mat.", "A kitten is resting on a rug.").reward
    unrelated = similarity("cosine", "The cat sat on the mat.", "Quarterly revenue grew by four percent.").reward
    assert same == pytest.approx(1.0, abs=1e-5)
    assert unrelated < related < same
    assert related > 0.4 and unrelated < 0.2
