"""The demo eval: the demo's held-out prompts (wordings training never shows), each answered by the
snapshot and checked with `string_check` against its label. Its id is fixed, `eval_demo`, so the demo
job's spec can name it (`"attune": {"eval": "eval_demo"}`) and its runs score each epoch."""

from evals.models import Eval
from evals.requests import check_criteria, check_data_source
from training.datasets import store_upload
from training.demo import HELDOUT_FILE, RFT_HELDOUT_FILE, heldout_path, rft_heldout_path
from training.demo_rft import GRADER, KEY, PASS_CHECK
from training.models import DataFile

DEMO_EVAL_ID = "eval_demo"
# The reinforcement demo's eval: its held-out prompts, graded by the grader its jobs learn from, and by its
# `json` part alone, which passes an answer at 1: the JSON object with the right order number, nothing else.
RFT_DEMO_EVAL_ID = "eval_demo_rft"
LABEL_CHECK = {"type": "string_check", "name": "label", "input": "{{sample.output_text}}",
               "reference": "{{item.expected}}", "operation": "eq"}
ITEM_SCHEMA = {"type": "object", "properties": {
    "messages": {"type": "array", "items": {"type": "object"}}, "expected": {"type": "string"}},
    "required": ["messages", "expected"]}


def _prompts_file(filename, path):
    """Held-out prompts as an evals file, uploaded again only when they change."""
    content = path.read_bytes()
    newest = DataFile.objects.filter(filename=filename, purpose="evals", owner__isnull=True).order_by(
        "-created_at", "-id").first()
    if newest is not None and newest.full_path.is_file() and newest.full_path.read_bytes() == content:
        return newest, False
    data_file, _report = store_upload([content], filename, purpose="evals")
    return data_file, True


def _ensure(eval_id, name, filename, path, item_schema, criteria, max_tokens):
    data_file, uploaded = _prompts_file(filename, path)
    data_source = {"type": "completions", "source": {"type": "file_id", "id": data_file.public_id},
                   "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
                   "sampling_params": {"max_completion_tokens": max_tokens, "temperature": 0.0, "top_p": 1.0,
                                       "seed": 42}}
    lines = [f"Uploaded {filename} as {data_file.public_id} for the demo eval {eval_id}."] if uploaded else []
    evaluation, created = Eval.objects.update_or_create(public_id=eval_id, defaults={
        "name": name,
        "data_source_config": {"type": "custom", "item_schema": item_schema, "include_sample_schema": True},
        "testing_criteria": check_criteria(criteria),
        "epoch_data_source": check_data_source(data_source, "attune.data_source", need_model=False)})
    if created:
        lines.append(f"Created the demo eval {evaluation.public_id} ({evaluation.name}).")
    return lines


def ensure_demo_eval():
    """Create or refresh the demo evals; the lines to print."""
    lines = _ensure(DEMO_EVAL_ID, "Demo intents: held-out exact match", HELDOUT_FILE, heldout_path(), ITEM_SCHEMA,
                    [LABEL_CHECK], max_tokens=8)
    rft_schema = {"type": "object", "properties": {"messages": {"type": "array", "items": {"type": "object"}},
                                                   KEY: {"type": "string"}}, "required": ["messages", KEY]}
    lines += _ensure(RFT_DEMO_EVAL_ID, "Demo order numbers as JSON: held-out pass rate", RFT_HELDOUT_FILE,
                     rft_heldout_path(), rft_schema, [GRADER, PASS_CHECK], max_tokens=16)
    return lines
