"""The demo eval: the demo's held-out prompts (wordings training never shows), each answered by the
snapshot and checked with `string_check` against its label. Its id is fixed, `eval_demo`, so the demo
job's spec can name it (`"attune": {"eval": "eval_demo"}`) and its runs score each epoch."""

from evals.models import Eval
from evals.requests import check_criteria, check_data_source
from training.datasets import store_upload
from training.demo import HELDOUT_FILE, heldout_path
from training.models import DataFile

DEMO_EVAL_ID = "eval_demo"
LABEL_CHECK = {"type": "string_check", "name": "label", "input": "{{sample.output_text}}",
               "reference": "{{item.expected}}", "operation": "eq"}
ITEM_SCHEMA = {"type": "object", "properties": {
    "messages": {"type": "array", "items": {"type": "object"}}, "expected": {"type": "string"}},
    "required": ["messages", "expected"]}


def _prompts_file():
    """The held-out prompts as an evals file, uploaded again only when they change."""
    content = heldout_path().read_bytes()
    newest = DataFile.objects.filter(filename=HELDOUT_FILE, purpose="evals", owner__isnull=True).order_by(
        "-created_at", "-id").first()
    if newest is not None and newest.full_path.is_file() and newest.full_path.read_bytes() == content:
        return newest, False
    data_file, _report = store_upload([content], HELDOUT_FILE, purpose="evals")
    return data_file, True


def ensure_demo_eval():
    """Create or refresh the demo eval; the lines to print."""
    data_file, uploaded = _prompts_file()
    data_source = {"type": "completions", "source": {"type": "file_id", "id": data_file.public_id},
                   "input_messages": {"type": "item_reference", "item_reference": "item.messages"},
                   "sampling_params": {"max_completion_tokens": 8, "temperature": 0.0, "top_p": 1.0, "seed": 42}}
    lines = [f"Uploaded {HELDOUT_FILE} as {data_file.public_id} for the demo eval."] if uploaded else []
    evaluation, created = Eval.objects.update_or_create(public_id=DEMO_EVAL_ID, defaults={
        "name": "Demo intents: held-out exact match",
        "data_source_config": {"type": "custom", "item_schema": ITEM_SCHEMA, "include_sample_schema": True},
        "testing_criteria": check_criteria([LABEL_CHECK]),
        "epoch_data_source": check_data_source(data_source, "attune.data_source", need_model=False)})
    if created:
        lines.append(f"Created the demo eval {evaluation.public_id} ({evaluation.name}).")
    return lines
