"""The Evals pages' forms: a new eval (prompts, sampling, graders built row by row or written as JSON), a
"Try it" sample, runs on snapshots.

The new-eval form builds the same body `POST /v1/evals` takes and checks it with
`evals.requests.eval_fields`, so the page and the API refuse the same things; `apply_eval_error` puts an
EvalError on the form field its `param` names.
"""

import json
import re

from django import forms
from django.forms import formset_factory

from evals.models import JudgeEndpoint
from training.models import DataFile

GRADER_TYPES = [("string_check", "string_check: compare two texts"),
                ("text_similarity", "text_similarity: a similarity metric"),
                ("score_model", "score_model: a judge model gives a score"),
                ("label_model", "label_model: a judge model picks a label"),
                ("python", "python: grade(sample, item) in a sandbox")]
OPERATIONS = [("eq", "eq (equal)"), ("ne", "ne (not equal)"), ("like", "like (input contains reference)"),
              ("ilike", "ilike (contains, ignoring case)")]
PROMPT_MODES = [("messages", "The item's messages (item.messages)"),
                ("template", "A template: a system and a user message with {{item.field}}")]
# Which fields of a grader row each type reads (the page's script shows only these).
ROW_FIELDS = {
    "string_check": ("input", "reference", "operation"),
    "text_similarity": ("input", "reference", "evaluation_metric", "pass_threshold"),
    "score_model": ("model", "judge_system", "judge_user", "range_low", "range_high", "pass_threshold"),
    "label_model": ("model", "judge_system", "judge_user", "labels", "passing_labels"),
    "python": ("source", "pass_threshold"),
}
MAX_TRY_SAMPLE = 20_000
MAX_TRY_ITEM = 64 * 1024
MAX_CRITERIA_JSON = 256 * 1024


def usable_prompt_files():
    """Files that can feed an eval: purpose evals or fine-tune, validated without errors; newest first."""
    return DataFile.objects.filter(purpose__in=["evals", "fine-tune"], status="processed", n_errors=0).order_by(
        "-created_at")[:200]


def snapshot_choices():
    from playground.snapshots import list_snapshots

    return [(s.name, s.label) for s in list_snapshots()]


def _text(label, help_text="", rows=3, required=False, max_length=20_000):
    return forms.CharField(label=label, required=required, strip=False, help_text=help_text, max_length=max_length,
                           widget=forms.Textarea(attrs={"rows": rows}))


class EvalForm(forms.Form):
    name = forms.CharField(max_length=256, help_text="What this eval measures, e.g. “intent accuracy”.")
    prompt_file = forms.ChoiceField(required=False, label="Prompt file",
                                    help_text="A validated JSONL file (purpose evals or fine-tune): one item per "
                                              "line. Its first line's fields make the item schema.")
    prompt_upload = forms.FileField(required=False, label="…or upload one",
                                    help_text="Stored with purpose evals, then used here.")
    prompt_mode = forms.ChoiceField(choices=PROMPT_MODES, initial="messages", label="Prompts",
                                    widget=forms.RadioSelect)
    system_template = _text("System message", "Optional. {{item.field}} inserts an item's field.")
    user_template = _text("User message", "Required for a template, e.g. “Classify: {{item.text}}”.")
    max_completion_tokens = forms.IntegerField(required=False, initial=256, help_text="1 to 4096.")
    temperature = forms.FloatField(required=False, initial=1.0, help_text="0 to 2.")
    top_p = forms.FloatField(required=False, initial=1.0, help_text="Above 0, at most 1.")
    seed = forms.IntegerField(required=False, initial=42)
    criteria_json = _text("Advanced: testing_criteria as JSON",
                          "Instead of the rows above: a JSON list of graders in OpenAI's shapes (multi graders "
                          "included). When filled in, the rows are ignored.", rows=6, max_length=MAX_CRITERIA_JSON)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.files_by_id = {f.public_id: f for f in usable_prompt_files()}
        self.fields["prompt_file"].choices = [("", "—")] + [
            (f.public_id, f"{f.filename} · {f.public_id} · {f.n_examples} lines · {f.purpose}")
            for f in self.files_by_id.values()]

    def data_source(self):
        """The completions data source without a model (`attune.data_source`) from the cleaned fields."""
        data = self.cleaned_data
        if data.get("prompt_mode") == "template":
            template = [{"role": "system", "content": data["system_template"]}] if data.get("system_template") \
                else []
            template.append({"role": "user", "content": data.get("user_template") or ""})
            messages = {"type": "template", "template": template}
        else:
            messages = {"type": "item_reference", "item_reference": "item.messages"}
        sampling = {name: data[name] for name in ("max_completion_tokens", "temperature", "top_p", "seed")
                    if data.get(name) is not None}
        return {"type": "completions", "source": {"type": "file_id", "id": data.get("prompt_file") or ""},
                "input_messages": messages, "sampling_params": sampling}


class GraderRowForm(forms.Form):
    type = forms.ChoiceField(choices=GRADER_TYPES, initial="string_check")
    name = forms.CharField(required=False, max_length=200, help_text="Unique in this eval; the type if empty.")
    input = forms.CharField(required=False, max_length=20_000, initial="{{sample.output_text}}",
                            help_text="Usually {{sample.output_text}}.")
    reference = forms.CharField(required=False, max_length=20_000, help_text="E.g. {{item.answer}}.")
    operation = forms.ChoiceField(required=False, choices=OPERATIONS, initial="eq")
    evaluation_metric = forms.ChoiceField(required=False, initial="fuzzy_match")
    model = forms.ChoiceField(required=False, label="Judge model")
    judge_system = _text("Judge system message", "Optional.")
    judge_user = _text("Judge user message", "E.g. “Rate from 0 to 1: {{sample.output_text}}”.")
    range_low = forms.FloatField(required=False, initial=0, label="Score range from")
    range_high = forms.FloatField(required=False, initial=1, label="to")
    labels = forms.CharField(required=False, max_length=2000, help_text="Comma-separated.")
    passing_labels = forms.CharField(required=False, max_length=2000, help_text="Comma-separated, among the labels.")
    source = _text("Python source", "def grade(sample, item) -> float", rows=6, max_length=256 * 1024)
    pass_threshold = forms.FloatField(required=False, help_text="A score at or above it passes.")

    def __init__(self, *args, snapshots=(), **kwargs):
        super().__init__(*args, **kwargs)
        from graders.similarity import METRICS

        self.fields["evaluation_metric"].choices = [(m, m) for m in METRICS]
        self.fields["model"].choices = [("", "—")] + list(snapshots)

    def grader(self, index, counts):
        """This row as a grader object; `counts` (type → rows of that type) names unnamed rows."""
        data = self.cleaned_data
        kind = data["type"]
        name = data.get("name") or (kind if counts.get(kind, 0) == 1 else f"{kind}_{index + 1}")
        grader = {"type": kind, "name": name}
        if kind in ("string_check", "text_similarity"):
            grader.update(input=data.get("input") or "", reference=data.get("reference") or "")
            if kind == "string_check":
                grader["operation"] = data.get("operation") or "eq"
            else:
                grader["evaluation_metric"] = data.get("evaluation_metric") or "fuzzy_match"
        elif kind in ("score_model", "label_model"):
            messages = [{"role": "system", "content": data["judge_system"]}] if data.get("judge_system") else []
            messages.append({"role": "user", "content": data.get("judge_user") or ""})
            grader.update(model=data.get("model") or "", input=messages)
            if kind == "score_model":
                low, high = data.get("range_low"), data.get("range_high")
                grader["range"] = [0 if low is None else low, 1 if high is None else high]
            else:
                grader["labels"] = _split(data.get("labels"))
                grader["passing_labels"] = _split(data.get("passing_labels"))
        else:
            grader["source"] = data.get("source") or ""
        if kind in ("text_similarity", "score_model", "python") and data.get("pass_threshold") is not None:
            grader["pass_threshold"] = data["pass_threshold"]
        return grader


def _split(text):
    return [part.strip() for part in (text or "").split(",") if part.strip()]


GraderFormSet = formset_factory(GraderRowForm, extra=0, min_num=1, max_num=20, validate_min=True,
                                validate_max=True)


def grader_rows(data=None, snapshots=None):
    if snapshots is None:
        snapshots = snapshot_choices()
    return GraderFormSet(data, prefix="grader", form_kwargs={"snapshots": snapshots})


def criteria_from(form, rows):
    """(testing criteria, from_json) of a bound, valid pair of forms."""
    text = (form.cleaned_data.get("criteria_json") or "").strip()
    if text:
        try:
            return json.loads(text), True
        except ValueError as exc:
            raise CriteriaJsonError(f"Not valid JSON: {exc}.") from None
    counts = {}
    for row in rows.forms:
        counts[row.cleaned_data["type"]] = counts.get(row.cleaned_data["type"], 0) + 1
    return [row.grader(i, counts) for i, row in enumerate(rows.forms)], False


class CriteriaJsonError(ValueError):
    pass


_CRITERION = re.compile(r"^testing_criteria\[(\d+)\](?:\.(\w+))?(?:\[(\d+)\])?")
_TEMPLATE = re.compile(r"^attune\.data_source\.input_messages\.template\[(\d+)\]")
_ROW_FIELD = {"input": "input", "reference": "reference", "operation": "operation",
              "evaluation_metric": "evaluation_metric", "model": "model", "range": "range_low", "labels": "labels",
              "passing_labels": "passing_labels", "source": "source", "pass_threshold": "pass_threshold",
              "name": "name", "type": "type"}


def apply_eval_error(exc, form, rows, from_json):
    """Put an EvalError on the field its param names: a grader row's field, the JSON criteria, the prompt
    file, the templates, a sampling field; else a non-field error that quotes the param."""
    param, message = exc.param or "", exc.message
    match = _CRITERION.match(param)
    if param.startswith("testing_criteria") and from_json:
        form.add_error("criteria_json", f"{param}: {message}")
        return
    if match and int(match.group(1)) < len(rows.forms):
        row = rows.forms[int(match.group(1))]
        field = _ROW_FIELD.get(match.group(2))
        if field == "input" and row.cleaned_data.get("type") in ("score_model", "label_model"):
            first = match.group(3) == "0" and row.cleaned_data.get("judge_system")
            field = "judge_system" if first else "judge_user"
        if field:
            row.add_error(field, message)
        else:
            row.add_error(None, f"{param}: {message}")
        return
    if param.startswith("attune.data_source.source") or param.startswith("data_source_config"):
        form.add_error("prompt_file", message)
        return
    template = _TEMPLATE.match(param)
    if template:
        system = form.cleaned_data.get("prompt_mode") == "template" and form.cleaned_data.get("system_template")
        form.add_error("system_template" if template.group(1) == "0" and system else "user_template", message)
        return
    if param.startswith("attune.data_source.input_messages"):
        form.add_error("prompt_mode", message)
        return
    sampling = param.rsplit(".", 1)[-1]
    if param.startswith("attune.data_source.sampling_params.") and sampling in form.fields:
        form.add_error(sampling, message)
        return
    if param == "name":
        form.add_error("name", message)
        return
    form.add_error(None, f"{param}: {message}" if param else message)


class TryForm(forms.Form):
    """One sample to grade before anything is saved; both inputs bounded (a request's memory is)."""

    try_sample = forms.CharField(required=False, strip=False, max_length=MAX_TRY_SAMPLE, label="Sample output",
                                 widget=forms.Textarea(attrs={"rows": 3}),
                                 help_text=f"What a model might answer (at most {MAX_TRY_SAMPLE:,} characters).")
    try_item = forms.CharField(required=False, max_length=MAX_TRY_ITEM, label="Item (JSON)",
                               widget=forms.Textarea(attrs={"rows": 4, "class": "mono"}),
                               help_text="The fields graders read as {{item.*}}; prefilled from the prompt file's "
                                         "first line.")

    def clean_try_item(self):
        text = (self.cleaned_data.get("try_item") or "").strip()
        if not text:
            return {}
        try:
            item = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError(f"Not valid JSON: {exc}.") from None
        if not isinstance(item, dict):
            raise forms.ValidationError("The item must be a JSON object, such as {\"answer\": \"yes\"}.")
        return item


class RunForm(forms.Form):
    snapshots = forms.MultipleChoiceField(help_text="One run per snapshot; runs of one base model are generated "
                                                    "together, in one batch per prompt.",
                                          widget=forms.SelectMultiple(attrs={"size": 8}))
    name = forms.CharField(required=False, max_length=200, help_text="Optional; the snapshot's name if empty.")

    def __init__(self, *args, snapshots=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["snapshots"].choices = snapshot_choices() if snapshots is None else snapshots


class JudgeEndpointForm(forms.Form):
    name = forms.SlugField(max_length=64, help_text="Graders name the judge as <name>/<model id>, e.g. "
                                                      "lab/gpt-oss-20b.")
    base_url = forms.URLField(max_length=500, assume_scheme="https", label="Base URL",
                              help_text="The endpoint's OpenAI-compatible /v1 URL, e.g. https://host/v1.")
    api_key = forms.CharField(max_length=JudgeEndpoint.MAX_KEY_LENGTH, required=False, label="API key",
                              widget=forms.PasswordInput(render_value=False),
                              help_text="Stored encrypted; never shown again.")

    def clean_name(self):
        name = self.cleaned_data["name"]
        if JudgeEndpoint.objects.filter(name=name).exists():
            raise forms.ValidationError(f"An endpoint named {name!r} exists; delete it first or pick another name.")
        return name

    def clean_base_url(self):
        url = self.cleaned_data["base_url"]
        if not url.startswith(("http://", "https://")):
            raise forms.ValidationError("Use an http:// or https:// URL.")
        return url
