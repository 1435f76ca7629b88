"""One test per validation rule, each asserting the line number it reports."""

import io
import json
import tracemalloc

import pytest

from training.datasets import DEFAULT_MAX_LINE_BYTES, MIN_EXAMPLES, validate_lines


def chat(user="hi", answer="hello", **extra):
    return {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": user},
                         {"role": "assistant", "content": answer}], **extra}


def preference(i=0):
    return {"input": {"messages": [{"role": "user", "content": f"q{i}"}]},
            "preferred_output": [{"role": "assistant", "content": "good"}],
            "non_preferred_output": [{"role": "assistant", "content": "bad"}]}


def jsonl(rows):
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def report_for(rows, **kwargs):
    data = rows if isinstance(rows, bytes) else jsonl(rows)
    return validate_lines(io.BytesIO(data), **kwargs)


def good(n=MIN_EXAMPLES):
    return [chat(f"question {i}") for i in range(n)]


def only_error(report):
    assert report.n_errors == 1, report.errors
    return report.errors[0]


def test_it_accepts_a_valid_chat_file():
    report = report_for(good(12))
    assert report.ok and report.n_examples == 12 and report.format == "chat"


def test_it_accepts_the_preference_format_and_the_older_completion_names():
    rows = [preference(i) for i in range(10)]
    old = preference(10)
    old["preferred_completion"] = old.pop("preferred_output")
    old["non_preferred_completion"] = old.pop("non_preferred_output")
    report = report_for(rows + [old])
    assert report.ok and report.format == "preference" and report.n_examples == 11


@pytest.mark.parametrize("row, code", [
    ("{not json", "invalid_json"),
    ("[" * 100_000 + "]" * 100_000, "invalid_json"),
    ("[1, 2]", "data_type"),
    ({"messages": []}, "missing_messages_list"),
    ({"prompt": "a", "completion": "b"}, "missing_messages_list"),
    ({"messages": [{"content": "x"}, {"role": "assistant", "content": "y"}]}, "message_missing_key"),
    ({"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}, "message_missing_key"),
    ({"messages": [{"role": "user", "content": "x", "mood": "sad"},
                   {"role": "assistant", "content": "y"}]}, "message_unrecognized_key"),
    ({"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]},
     "unrecognized_role"),
    ({"messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": "y"}]}, "missing_content"),
    ({"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "y"}]}, "missing_content"),
    ({"messages": [{"role": "system", "content": "x"}]}, "example_missing_assistant_message"),
    ({"messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "x"},
                   {"role": "system", "content": "y"}]}, "example_missing_assistant_message"),
    ({"messages": [{"role": "developer", "content": "x"}, {"role": "user", "content": "x"},
                   {"role": "assistant", "content": "y"}]}, "unrecognized_role"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}]},
     "no_trained_assistant_message"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]},
     "invalid_weight"),
    ({"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant", "content": "y"}]},
     "weight_not_on_assistant"),
    ({"messages": [{"role": "user", "content": "x"},
                   {"role": "assistant", "content": None, "tool_calls": "call it"}]}, "invalid_tool_calls"),
    ({"messages": ["hello", {"role": "assistant", "content": "y"}]}, "message_not_object"),
    ({**chat(), "extra": 1}, "example_unrecognized_key"),
    ({"input": {"messages": []}, "preferred_output": [{"role": "assistant", "content": "a"}],
      "non_preferred_output": [{"role": "assistant", "content": "b"}]}, "invalid_preference_input"),
    ({"input": {"messages": [{"role": "user", "content": "q"}]},
      "preferred_output": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}],
      "non_preferred_output": [{"role": "assistant", "content": "b"}]}, "invalid_preference_output"),
])
def test_each_rule_reports_its_code_and_line_number(row, code):
    is_preference = isinstance(row, dict) and "input" in row
    rows = [preference(i) for i in range(10)] if is_preference else good(10)
    rows.insert(4, row)  # line 5
    err = only_error(report_for(rows))
    assert err["code"] == code
    assert err["line"] == 5
    assert "Line 5" in err["message"]


def test_a_line_in_another_format_than_the_first_is_refused():
    rows = good(10) + [preference()]
    err = only_error(report_for(rows))
    assert err["code"] == "mixed_formats" and err["line"] == 11


def prompt(i=0, **extra):
    """A reinforcement prompt: messages ending with a user turn, and the fields a grader reads."""
    return {"messages": [{"role": "developer", "content": "Classify the intent."},
                         {"role": "user", "content": f"question {i}"}], "intent": "greeting", **extra}


def test_it_accepts_reinforcement_prompts_with_the_fields_graders_read():
    rows = [prompt(i, meta={"tags": ["a"]}) for i in range(9)]
    rows.append({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "order 1?"},
                              {"role": "assistant", "content": None, "tool_calls": [
                                  {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                              {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
                              {"role": "assistant", "content": "It shipped."},
                              {"role": "user", "content": [{"type": "text", "text": "when?"}]}],
                 "answer": 3})
    report = report_for(rows)
    assert report.ok, report.errors
    assert report.format == "reinforcement" and report.n_examples == 10


def test_a_line_with_no_assistant_that_ends_with_a_user_turn_is_a_reinforcement_prompt():
    rows = [{"messages": [{"role": "user", "content": f"q{i}"}]} for i in range(10)]
    report = report_for(rows)
    assert report.ok and report.format == "reinforcement"


@pytest.mark.parametrize("last", [{"role": "system", "content": "x"}, {"role": "developer", "content": "x"},
                                  {"role": "tool", "tool_call_id": "c1", "content": "x"},
                                  {"role": "user", "content": "x", "weight": 1, "extra": 2}])
def test_a_reinforcement_line_must_end_with_a_user_turn(last):
    row = prompt()
    row["messages"].append(last)
    rows = [prompt(i) for i in range(10)]
    rows.insert(6, row)  # line 7
    errors = report_for(rows).errors
    if last["role"] == "user":
        assert {e["code"] for e in errors} == {"message_unrecognized_key"}
    else:
        assert any(e["code"] == "last_message_not_user" and f"messages[2] is a {last['role']!r}" in e["message"]
                   for e in errors), errors
    assert all(e["line"] == 7 and e["message"].startswith("Line 7: ") for e in errors)


def test_a_chat_line_in_a_reinforcement_file_is_named_with_both_formats():
    rows = [prompt(i) for i in range(10)]
    rows.insert(6, chat())
    err = only_error(report_for(rows))
    assert err["code"] == "mixed_formats" and err["line"] == 7
    assert ("Line 7: This line is a supervised chat example (it ends with an assistant answer), but the file's "
            "first example (line 1) is a reinforcement prompt") in err["message"]


@pytest.mark.parametrize("first, other", [("chat", "reinforcement"), ("preference", "reinforcement"),
                                          ("reinforcement", "preference")])
def test_reinforcement_prompts_do_not_mix_with_other_formats(first, other):
    make = {"chat": lambda i: chat(f"q{i}"), "preference": preference, "reinforcement": prompt}
    rows = [make[first](i) for i in range(10)]
    rows.insert(2, make[other](99))  # line 3
    err = only_error(report_for(rows))
    assert err["code"] == "mixed_formats" and err["line"] == 3
    assert "reinforcement prompt" in err["message"] and "line 1" in err["message"]


def test_tools_on_a_reinforcement_prompt_are_refused_naming_the_line():
    rows = [prompt(i) for i in range(10)]
    rows.insert(3, prompt(tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}]))
    err = only_error(report_for(rows))
    assert err["code"] == "tools_not_supported" and err["line"] == 4 and "not supported" in err["message"]


def test_the_developer_role_is_checked_like_the_others_in_a_reinforcement_prompt():
    rows = [prompt(i) for i in range(10)]
    rows[4]["messages"][0]["content"] = ""
    rows[5]["messages"][0]["role"] = "function"
    errors = report_for(rows).errors
    assert [(e["line"], e["code"]) for e in errors] == [(5, "missing_content"), (6, "unrecognized_role")]


def test_tool_calls_and_tool_messages_are_accepted():
    call = {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"id\": 1}"}}
    row = {"messages": [{"role": "user", "content": "order 1?"},
                        {"role": "assistant", "content": None, "tool_calls": [call]},
                        {"role": "tool", "tool_call_id": "c1", "content": "shipped"},
                        {"role": "assistant", "content": "It shipped."}],
           "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]}
    assert report_for(good(10) + [row]).ok


def tool_row(call=None, answer="c1", **call_fields):
    """A chat with one tool call (fields replaced or, when None, removed) and its answer (none when False)."""
    call = call if call is not None else {
        "id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{\"id\": 1}"}}
    for key, value in call_fields.items():
        target = call["function"] if key in ("name", "arguments") else call
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    tool = {"role": "tool", "content": "shipped"}
    if answer is not None:
        tool["tool_call_id"] = answer
    return {"messages": [{"role": "user", "content": "order 1?"},
                         {"role": "assistant", "content": None, "tool_calls": [call]},
                         *([tool] if answer is not False else []),
                         {"role": "assistant", "content": "It shipped."}]}


@pytest.mark.parametrize("row, code", [
    (tool_row(id=None, answer=False), "tool_call_missing_id"),
    (tool_row(id=" ", answer=False), "tool_call_missing_id"),
    (tool_row(type=None), "invalid_tool_call_type"),
    (tool_row(type="code_interpreter"), "invalid_tool_call_type"),
    (tool_row(name=None), "tool_call_missing_name"),
    (tool_row(function=None), "tool_call_missing_name"),
    (tool_row(arguments=None), "tool_call_missing_arguments"),
    (tool_row(arguments={"id": 1}), "invalid_tool_call_arguments"),
    (tool_row(arguments="{id: 1"), "invalid_tool_call_arguments"),
    (tool_row(answer=None), "tool_message_missing_tool_call_id"),
    (tool_row(answer="c2"), "unknown_tool_call_id"),
    ({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": ["f"]}]},
     "invalid_tool_calls"),
])
def test_each_tool_call_rule_reports_its_code_and_line_number(row, code):
    rows = good(10)
    rows.insert(4, row)  # line 5
    errors = report_for(rows).errors
    assert errors and {e["code"] for e in errors} == {code}, errors
    assert all(e["line"] == 5 and e["message"].startswith("Line 5: messages[") for e in errors)


def test_a_tool_message_must_answer_a_call_issued_before_it():
    row = tool_row()
    messages = row["messages"]
    messages[1], messages[2] = messages[2], messages[1]  # the answer comes before the call
    err = only_error(report_for(good(10) + [row]))
    assert err["code"] == "unknown_tool_call_id" and err["line"] == 11 and "messages[1]" in err["message"]


def test_two_tool_calls_of_one_conversation_may_not_share_an_id():
    row = tool_row()
    row["messages"] += [{"role": "user", "content": "and order 2?"}, dict(row["messages"][1]),
                        {"role": "tool", "tool_call_id": "c1", "content": "pending"},
                        {"role": "assistant", "content": "Pending."}]
    err = only_error(report_for(good(10) + [row]))
    assert err["code"] == "duplicate_tool_call_id" and "messages[5].tool_calls[0]" in err["message"]


def test_tool_calls_in_a_preference_input_are_checked_too():
    rows = [preference(i) for i in range(10)]
    row = preference()
    row["input"]["messages"] = tool_row(arguments=None)["messages"][:3]
    rows.append(row)
    err = only_error(report_for(rows))
    assert err["code"] == "tool_call_missing_arguments" and err["line"] == 11
    assert "input.messages[1].tool_calls[0]" in err["message"]


def test_invalid_utf8_names_its_line():
    data = jsonl(good(10)).replace(b'"question 2"', b'"question \xff"')
    err = only_error(report_for(data))
    assert err["code"] == "invalid_utf8" and err["line"] == 3


def test_a_bom_and_crlf_line_ends_are_accepted():
    data = b"\xef\xbb\xbf" + jsonl(good(10)).replace(b"\n", b"\r\n")
    report = report_for(data)
    assert report.ok and report.n_examples == 10


def test_blank_lines_are_skipped_and_counted():
    rows = good(10)
    data = jsonl(rows[:3]) + b"\n   \n" + jsonl(rows[3:]) + b"\r\n"
    report = report_for(data)
    assert report.ok and report.n_examples == 10 and report.n_blank_lines == 3


def test_an_empty_file_is_refused():
    for data in (b"", b"\n\n"):
        err = only_error(report_for(data))
        assert err["code"] == "empty_file" and err["line"] is None


def test_fewer_than_ten_examples_is_refused_with_code_invalid_n_examples():
    err = only_error(report_for(good(9)))
    assert err["code"] == "invalid_n_examples"
    assert "has 9 example(s), but must have at least 10" in err["message"]


def test_a_file_over_the_size_limit_is_refused_while_streaming():
    report = report_for(good(50), max_bytes=1000)
    assert report.errors[-1]["code"] == "file_too_large"


def test_every_error_is_reported_not_only_the_first():
    rows = good(10) + ["oops", {"messages": []}, "[]"]
    report = report_for(rows)
    assert [(e["line"], e["code"]) for e in report.errors] == [
        (11, "invalid_json"), (12, "missing_messages_list"), (13, "data_type")]


def test_a_line_over_the_line_limit_is_refused_without_reading_it_whole(tmp_path):
    path = tmp_path / "long.jsonl"
    rows = good(10)
    with open(path, "wb") as out:
        out.write(jsonl(rows[:5]))
        out.write(b'{"messages": [{"role": "user", "content": "')
        for _ in range(48):  # 48 MB of content, six times the default limit
            out.write(b"a" * (1024 * 1024))
        out.write(b'"}, {"role": "assistant", "content": "y"}]}\n')
        out.write(jsonl(rows[5:]))
    tracemalloc.start()
    try:
        with open(path, "rb") as fh:
            report = validate_lines(fh)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    err = only_error(report)
    assert err["code"] == "line_too_long" and err["line"] == 6 and err["message"].startswith("Line 6 is ")
    assert "ATTUNE_MAX_LINE_MB" in err["message"]
    assert report.n_examples == 10 and report.n_lines == 11
    assert peak < 3 * DEFAULT_MAX_LINE_BYTES, f"peak {peak:,} bytes"  # the line alone is 6 times the limit


def test_a_line_at_the_line_limit_is_read():
    row = json.dumps(chat("x" * 100)).encode()
    for ending in (b"\n", b"\r\n", b""):
        data = jsonl(good(10)) + row + ending
        assert report_for(data, max_line_bytes=len(row)).ok
        err = only_error(report_for(data, max_line_bytes=len(row) - 1))
        assert err["code"] == "line_too_long" and err["line"] == 11


def test_numbered_examples_carry_the_line_numbers_the_validator_reports(tmp_path):
    from training.datasets import iter_numbered_examples

    path = tmp_path / "data.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + jsonl([prompt(0)]) + b"\n  \r\n" + jsonl([prompt(1)]))
    assert [(n, e["messages"][1]["content"]) for n, e in iter_numbered_examples(path)] == [
        (1, "question 0"), (4, "question 1")]
