import json
import secrets

from django import forms

from graders import GraderError, validate_grader
from training.engine.spec import AUTO, INTEGRATIONS, WORKER_FIELDS, form_fields, spec_errors
from training.models import BaseModel, DataFile, FineTuningJob
from training.sweeps import MAX_FIELDS, SWEEPABLE, sweepable_for


class UploadForm(forms.Form):
    file = forms.FileField(help_text="A JSONL file: one chat example (or one preference pair) per line.")


class StatsModelForm(forms.Form):
    base_model = forms.ModelChoiceField(queryset=BaseModel.objects.all(), required=False,
                                        help_text="Token counts use this base model's tokenizer and chat template.")


class EvaluatorForm(forms.Form):
    username = forms.RegexField(regex=r"^[\w.@+-]{2,150}$", max_length=150,
                                help_text="Letters, digits and @/./+/-/_ only.")
    role = forms.ChoiceField(choices=[("evaluator", "Evaluator"), ("admin", "Admin")], initial="evaluator")


# --- Jobs: the new-job / re-run form is generated from JobSpec ---------------

# The stored spec names the base model and files as Attune knows them, not as paths.
HELP_OVERRIDES = {
    "model": "The model to fine-tune: a base model (registered by an admin), or a fine-tuned snapshot to train "
             "further. A LoRA snapshot goes on training its adapter (same LoRA settings), or with adapter "
             "'full' is merged into its base first; a full-weight snapshot trains in full.",
    "training_file": "A processed JSONL file. Files with errors are listed but cannot be picked.",
    "validation_file": "Optional. Loss and accuracy on it are charted during training and measured in full at "
                       "every epoch end.",
    "eval": "Optional. An eval run on every epoch checkpoint, off the training path; its scores appear in the "
            "checkpoints table. Only evals with prompts of their own are listed.",
}

# A reinforcement job's grader, as the help text shows it: a multi grader whose reward mixes an exact match with a
# fuzzy one (a training line's other keys, here `label`, are the grader's `{{item.…}}`).
EXAMPLE_GRADER = {
    "type": "multi", "name": "intent",
    "graders": {
        "exact": {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                  "reference": "{{item.label}}", "operation": "eq"},
        "close": {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
                  "reference": "{{item.label}}", "evaluation_metric": "fuzzy_match"}},
    "calculate_output": "0.7 * exact + 0.3 * close",
}
HELP_OVERRIDES["grader"] = (
    "Reinforcement only, required: the grader whose score (0–1) is the reward of each sampled answer, as JSON in "
    "OpenAI's grader shape (string_check, text_similarity, python, score_model or multi). A training line's keys "
    "besides messages are {{item.<key>}}, the answer is {{sample.output_text}} (and {{sample.output_json}} with a "
    f"response_format). Example: {json.dumps(EXAMPLE_GRADER)}")
HELP_OVERRIDES["response_format"] = (
    "Reinforcement only, optional: a json_schema response format as JSON, e.g. "
    '{"type": "json_schema", "json_schema": {"name": "answer", "schema": {"type": "object", "properties": '
    '{"label": {"type": "string"}}, "required": ["label"]}}}. An answer that is not JSON matching the schema '
    "scores 0 and counts as a parse error.")
# The spec fields a person types as JSON (objects).
JSON_FIELDS = ("grader", "response_format")

# best_checkpoint_metric's fixed choices; each testing criterion of the listed evals adds `eval:<name>`.
BEST_METRICS = [
    ("auto", "auto: eval_mean_score with an eval, else full_valid_mean_reward (reinforcement) or full_valid_loss"),
    ("full_valid_loss", "full_valid_loss (lowest)"),
    ("full_valid_mean_reward", "full_valid_mean_reward (highest, reinforcement)"),
    ("eval_mean_score", "eval_mean_score (highest)"),
    ("eval_pass_rate", "eval_pass_rate (highest)"),
]
# The methods whose jobs report a metric (full_valid_loss: none of a reinforcement job's lines has a loss on the
# validation file); job_form.js offers it only for those (`data-methods`).
BEST_METRIC_METHODS = {"full_valid_loss": ("supervised", "dpo"), "full_valid_mean_reward": ("reinforcement",)}


def field_key(name):
    """Form field name for a dotted spec field: `integrations.wandb.project` → `integrations__wandb__project`."""
    return name.replace(".", "__")


def spec_name(key):
    return key.replace("__", ".")


def _split_list(text):
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def _methods_text(methods):
    return " and ".join("DPO" if m == "dpo" else m for m in methods)


class JSONObjectField(forms.CharField):
    """A JSON object typed in a textarea: a dict, None when left empty, or an error that says where the JSON
    breaks."""

    widget = forms.Textarea

    def to_python(self, value):
        text = super().to_python(value)
        if not text:
            return None
        try:
            parsed = json.loads(text)
        except ValueError as exc:
            where = f" (line {exc.lineno}, column {exc.colno})" if hasattr(exc, "lineno") else ""
            raise forms.ValidationError(f"This is not JSON: {getattr(exc, 'msg', exc)}{where}.") from None
        if not isinstance(parsed, dict):
            raise forms.ValidationError(f"Give a JSON object ({{…}}), not a JSON {type(parsed).__name__}.")
        return parsed

    def prepare_value(self, value):
        return json.dumps(value, indent=2) if isinstance(value, dict) else value


class FileSelect(forms.Select):
    """Lists every file with its validation status; a file with errors is shown but disabled."""

    def __init__(self, *args, unusable=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.unusable = set(unusable)

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        if value in self.unusable:
            option["attrs"]["disabled"] = True
        return option


class SpecSelect(forms.Select):
    """A select for a free-text spec field: the value is checked by the spec and `create_job`, not against the
    options, so a value that is not offered (a re-run's eval that is gone) is shown as an option of its own
    and refused next to the field. `option_attrs`: {value: {attribute: text}} for job_form.js."""

    def __init__(self, *args, option_attrs=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.option_attrs = option_attrs or {}

    def optgroups(self, name, value, attrs=None):
        offered = {str(v) for v, _label in self.choices}
        missing = [v for v in value if v not in ("", None) and v not in offered]
        if missing:
            self.choices = list(self.choices) + [(v, f"{v} (not listed)") for v in missing]
            self.option_attrs = {**self.option_attrs, **{v: {"data-unlisted": "1"} for v in missing}}
        return super().optgroups(name, value, attrs)

    def create_option(self, name, value, label, selected, index, subindex=None, attrs=None):
        option = super().create_option(name, value, label, selected, index, subindex, attrs)
        option["attrs"].update(self.option_attrs.get(value, {}))
        return option


def epoch_evals():
    """The evals a job can run on its epoch checkpoints: those with prompts of their own, newest first.
    Found through the app registry, as training/jobs.py finds them."""
    from django.apps import apps

    return list(apps.get_model("evals", "Eval").objects.exclude(epoch_data_source={}).only(
        "public_id", "name", "testing_criteria", "epoch_data_source"))


def _eval_label(eval_obj):
    return f"{eval_obj.name} ({eval_obj.public_id})" if eval_obj.name else eval_obj.public_id


def _file_label(f):
    if f.usable:
        state = f"{f.n_examples} examples, valid"
    elif f.status == "error" or f.n_errors:
        state = f"{f.n_errors} error{'s' if f.n_errors != 1 else ''}: cannot be used"
    else:
        state = f"{f.status}: cannot be used yet"
    return f"{f.filename} · {f.public_id} · {state}"


def _has_switch(meta):
    """An `auto` number gets an "auto" switch; an `auto` choice (reasoning_effort) offers auto as an option."""
    return meta["auto"] and not meta["choices"]


# The fine-tuned snapshots the form lists, newest first (an older one can still be typed through the API).
MAX_MODEL_CHOICES = 200


def model_choices():
    """The models a job can start from, as grouped choices: the base models, then the fine-tuned snapshots
    (each job's final model and its epoch checkpoints), newest job first."""
    from playground.snapshots import BASE, list_snapshots

    snapshots = list_snapshots(limit=MAX_MODEL_CHOICES)
    groups = [("Base models", [(s.name, s.name) for s in snapshots if s.kind == BASE])]
    tuned = [(s.name, s.label) for s in snapshots if s.kind != BASE]
    return groups + ([("Fine-tuned models", tuned)] if tuned else [])


class ModelNameField(forms.ChoiceField):
    """A base model or fine-tuned snapshot of the list, or any `ft:` name (a re-run's snapshot may be older than
    the list holds): whether that one exists is create_job's to say, next to the field."""

    def valid_value(self, value):
        return str(value).startswith("ft:") or super().valid_value(value)


class JobForm(forms.Form):
    """Every JobSpec field a person sets, with its help text and range.

    `auto` hyperparameters get a number input plus an "auto" switch (a choice
    offers auto as one of its options); each integration gets a switch; lists
    are typed comma-separated; the grader and response_format are JSON objects
    typed in a textarea. A field of some methods only (its `methods` tag:
    the reinforcement method's grader and GRPO settings, DPO's beta, packing)
    carries them in `data-methods`, and job_form.js shows it only while one of
    them is picked; the server leaves such a field out of the spec of another
    method, and refuses a value set in it. `spec` (after `is_valid()`) is the
    dict `training.jobs.create_job` receives, checked by `spec_errors` (and the
    grader by `graders.validate_grader`) so every message lands next to its
    field. Whether the files can start the job, and a score_model grader's
    judge, are `create_job`'s to say: the view puts its `JobError` next to the
    field (`add_spec_error`).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.spec = None
        self.spec_fields = [f for f in form_fields() if f["name"] not in WORKER_FIELDS]
        files = list(DataFile.objects.filter(purpose="fine-tune").only(
            "public_id", "filename", "status", "n_errors", "n_examples", "purpose"))
        self.files = {f.public_id: f for f in files}
        self.evals = {e.public_id: e for e in epoch_evals()}
        for meta in self.spec_fields:
            key = field_key(meta["name"])
            self.fields[key] = self._make_field(meta)
            if _has_switch(meta):
                self.fields[key + "__auto"] = forms.BooleanField(
                    required=False, initial=meta["default"] == AUTO, label="auto",
                    help_text=f"Let Attune pick {meta['name']} when the job starts.")
        for name, label in INTEGRATIONS.items():
            self.fields[f"integrations__{name}__enabled"] = forms.BooleanField(
                required=False, label=f"Log to {label}")

    def _make_field(self, meta):
        name, default = meta["name"], meta["default"]
        help_text = HELP_OVERRIDES.get(name, meta["help"])
        common = {"required": False, "help_text": help_text, "label": name.rsplit(".", 1)[-1]}
        if name == "model":
            default = BaseModel.default()
            return ModelNameField(choices=model_choices(), initial=default.name if default else None,
                                  **{**common, "required": True})
        if name in ("training_file", "validation_file"):
            unusable = [fid for fid, f in self.files.items() if not f.usable]
            choices = [(fid, _file_label(f)) for fid, f in self.files.items()]
            # No file is picked for the person: the newest upload is not always the training file.
            choices = [("", "— none —" if name == "validation_file" else "— pick a file —")] + choices
            return forms.ChoiceField(choices=choices, widget=FileSelect(unusable=unusable),
                                     **{**common, "required": name == "training_file"})
        if name == "eval":
            choices = [("", "— none —")] + [(eid, _eval_label(e)) for eid, e in self.evals.items()]
            return forms.CharField(widget=SpecSelect(choices=choices), **common)
        if name == "best_checkpoint_metric":
            return self._best_metric_field(common)
        if name in JSON_FIELDS:
            return JSONObjectField(widget=forms.Textarea(attrs={"rows": 6, "class": "json", "spellcheck": "false"}),
                                   **common)
        if meta["choices"]:
            return forms.ChoiceField(choices=[(c, c) for c in meta["choices"]], initial=default, **common)
        low, high = meta["min"], meta["max"]
        initial = None if default == AUTO else default
        if name == "seed":
            # Left empty, the job gets a random seed, stored with it so a re-run repeats the run.
            initial = None
            help_text += " Empty: a random seed, stored with the job."
            common["help_text"] = help_text
        attrs = {k: v for k, v in (("min", low), ("max", high)) if v is not None}
        if meta["type"] == "bool":
            return forms.BooleanField(initial=default, **common)
        if meta["type"] == "int":
            return forms.IntegerField(initial=initial, widget=forms.NumberInput(attrs=attrs), **common)
        if meta["type"] == "float":
            return forms.FloatField(initial=initial, widget=forms.NumberInput(attrs={**attrs, "step": "any"}),
                                    **common)
        if meta["type"] == "list":
            text = default if isinstance(default, str) else ", ".join(default or [])
            return forms.CharField(initial=text, **{**common, "help_text": help_text + " Comma-separated."})
        return forms.CharField(initial=default, **common)

    def _best_metric_field(self, common):
        """auto, full_valid_loss, full_valid_mean_reward, the eval-wide scores, and `eval:<name>` per testing
        criterion of the listed evals. Each eval option names the evals it needs (`data-evals`), and the validation
        metrics the methods that report them (`data-methods`), so job_form.js can offer only those that fit the eval
        and the method picked; the server checks them anyway (`clean`, and the spec)."""
        evals_with = {}
        for eval_id, eval_obj in self.evals.items():
            for criterion in eval_obj.criteria_names:
                if criterion:
                    evals_with.setdefault(f"eval:{criterion}", []).append(eval_id)
        every_eval = " ".join(self.evals)
        option_attrs = {"eval_mean_score": {"data-evals": every_eval}, "eval_pass_rate": {"data-evals": every_eval},
                        **{value: {"data-evals": " ".join(ids)} for value, ids in evals_with.items()},
                        **{value: {"data-methods": " ".join(methods)} for value, methods in BEST_METRIC_METHODS.items()}}
        choices = BEST_METRICS + [
            (value, f"{value} (highest) · {', '.join(self.evals[i].name or i for i in ids)}")
            for value, ids in evals_with.items()]
        return forms.CharField(initial=AUTO, widget=SpecSelect(choices=choices, option_attrs=option_attrs), **common)

    # --- how the template lays the fields out ------------------------------

    def _entry(self, meta):
        key = field_key(meta["name"])
        low, high = meta["min"], meta["max"]
        if low is not None and high is not None:
            range_text = f"{low} – {high}" if meta["type"] == "int" else f"{low:g} – {high:g}"
        elif meta["choices"]:
            range_text = " | ".join(meta["choices"])
        else:
            range_text = ""
        return {"field": self[key], "auto": self[key + "__auto"] if _has_switch(meta) else None,
                "name": meta["name"], "range": range_text, "methods": " ".join(meta["methods"] or ()),
                "wide": meta["name"] in JSON_FIELDS}

    def sections(self):
        """[(title, [entries])] for the basic, hyperparameter, advanced and integration parts."""
        by_group = {"basic": [], "hyperparameters": [], "advanced": []}
        integrations = {name: [] for name in INTEGRATIONS}
        for meta in self.spec_fields:
            if meta["group"] == "integrations":
                integrations[meta["name"].split(".")[1]].append(self._entry(meta))
            else:
                by_group[meta["group"]].append(self._entry(meta))
        return {
            "basic": by_group["basic"],
            "hyperparameters": by_group["hyperparameters"],
            "advanced": by_group["advanced"],
            "integrations": [(name, label, self[f"integrations__{name}__enabled"], integrations[name])
                             for name, label in INTEGRATIONS.items()],
        }

    # --- from the stored spec (re-run) and to it (submit) -------------------

    @classmethod
    def initial_from_spec(cls, spec):
        """Form values for a stored spec, as it was requested: `auto` stays switched on."""
        initial = {}
        for meta in form_fields():
            name = meta["name"]
            if name in WORKER_FIELDS:
                continue
            value = spec
            for part in name.split("."):
                value = value.get(part) if isinstance(value, dict) else None
            key = field_key(name)
            if value is None:
                value = meta["default"]  # a spec stored before the field existed
            if _has_switch(meta):
                initial[key + "__auto"] = value == AUTO
                initial[key] = None if value == AUTO else value
            elif name in JSON_FIELDS and value is not None:
                initial[key] = json.dumps(value, indent=2)
            elif isinstance(value, list):
                initial[key] = ", ".join(value)
            elif value is not None:
                initial[key] = value
        for name in INTEGRATIONS:
            initial[f"integrations__{name}__enabled"] = bool((spec.get("integrations") or {}).get(name))
        return initial

    def clean(self):
        cleaned = super().clean()
        spec, integrations = {}, {}
        method = cleaned.get("method") or "supervised"
        for meta in self.spec_fields:
            name, key = meta["name"], field_key(meta["name"])
            if key in self._errors:
                continue
            value = cleaned.get(key)
            if meta["methods"] and method not in meta["methods"]:
                self._check_not_set(meta, value, cleaned.get(key + "__auto"))
                continue
            if _has_switch(meta):
                if cleaned.get(key + "__auto"):
                    if value is not None:
                        self.add_error(key, f"Switch off auto to use {value:g}, or clear the number.")
                        continue
                    value = AUTO
                elif value is None:
                    self.add_error(key, "Give a number, or switch on auto.")
                    continue
            elif meta["type"] == "list":
                value = value.strip()
                if name == "lora_target_modules" and value == "all-linear":
                    pass
                else:
                    value = _split_list(value)
            elif isinstance(value, str):
                value = value.strip()
            if value in (None, "") or (name.startswith("integrations.") and value == []):
                continue
            if name.startswith("integrations."):
                _, integration, leaf = name.split(".")
                integrations.setdefault(integration, {})[leaf] = value
            else:
                spec[name] = value
        wanted = {}
        for integration, label in INTEGRATIONS.items():
            enabled = cleaned.get(f"integrations__{integration}__enabled")
            typed = integrations.get(integration, {})
            # Untouched defaults (MLflow's experiment name) do not count as "typed".
            typed_by_hand = {k: v for k, v in typed.items() if v != self.fields[
                f"integrations__{integration}__{k}"].initial}
            if enabled:
                wanted[integration] = typed
            elif typed_by_hand:
                self.add_error(f"integrations__{integration}__enabled",
                               f"Switch on {label} to use the values typed below, or clear them.")
        if wanted:
            spec["integrations"] = wanted
        self._check_criterion(spec)
        self._check_grader(spec)
        for field, message in spec_errors(spec):
            key = self._field_for(field)
            if key in self._errors:
                continue
            if key is not None:
                self.add_error(key, message)
            elif field.startswith("integrations.") and len(field.split(".")) >= 2:
                self.add_error(f"integrations__{field.split('.')[1]}__enabled", f"{field}: {message}")
            else:
                self.add_error(None, f"{field}: {message}" if field != "__all__" else message)
        self.spec = spec if not self._errors else None
        return cleaned

    def _check_criterion(self, spec):
        """`eval:<name>` names a testing criterion of the eval the job runs (an eval that is not listed is
        `create_job`'s to refuse)."""
        metric, eval_obj = spec.get("best_checkpoint_metric", ""), self.evals.get(spec.get("eval"))
        if metric.startswith("eval:") and eval_obj is not None and metric[5:] not in eval_obj.criteria_names:
            self.add_error("best_checkpoint_metric",
                           f"{_eval_label(eval_obj)} has no testing criterion named '{metric[5:]}'; it has "
                           f"{', '.join(map(str, eval_obj.criteria_names)) or 'none'}.")

    def _check_not_set(self, meta, value, auto):
        """A field of other methods than the one picked stays out of the spec; a value typed in it (not its
        default) is refused, so that nothing typed is dropped unseen (job_form.js hides such fields, and a hidden
        field is not sent)."""
        if _has_switch(meta) and auto and value in (None, ""):
            value = AUTO
        if isinstance(value, str):
            value = value.strip()
        if value in (None, "", {}) or value == meta["default"]:
            return
        self.add_error(field_key(meta["name"]), f"{meta['name']} applies to {_methods_text(meta['methods'])} jobs "
                                                f"only: clear it, or pick that method.")

    def _check_grader(self, spec):
        """A reinforcement job's grader has the shape OpenAI takes for one (`graders.validate_grader`, in its rft
        context: no label_model at the top). Whether a score_model's judge exists is create_job's to check."""
        grader = spec.get("grader")
        if spec.get("method") != "reinforcement" or not isinstance(grader, dict) or "grader" in self._errors:
            return
        try:
            validate_grader(grader, context="rft")
        except GraderError as exc:
            self.add_error("grader", exc.message)

    def _field_for(self, param):
        """The form field of a dotted spec field, or of the nearest field above it: `grader.graders.exact.input`
        and `grader.input[0].content` land on the grader's textarea. None when no field holds it."""
        parts = (param or "").split(".")
        for end in range(len(parts), 0, -1):
            key = field_key(".".join(parts[:end]))
            if key in self.fields:
                return key
            base = key.split("[", 1)[0]
            if base in self.fields:
                return base
        return None

    def add_spec_error(self, param, message):
        """Put an error from `training.jobs` (its `param` is a dotted spec field, or a path inside one, as a
        grader's) next to its field."""
        self.add_error(self._field_for(param), message)

    @property
    def spec_json(self):
        return json.dumps(self.spec, indent=2) if self.spec is not None else ""


class JobFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "any status")] + FineTuningJob.STATUSES, required=False)
    model = forms.ChoiceField(choices=[], required=False, label="base model")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].choices = [("", "any model")] + [
            (name, name) for name in BaseModel.objects.values_list("name", flat=True)]


class CompareRunsForm(forms.Form):
    jobs = forms.Field(widget=forms.MultipleHiddenInput, help_text="Pick 2 to 4 jobs.",
                       error_messages={"required": "Pick 2 to 4 jobs to compare."})

    def clean_jobs(self):
        picked = list(dict.fromkeys(self.cleaned_data["jobs"]))
        if not 2 <= len(picked) <= 4:
            raise forms.ValidationError(f"Pick 2 to 4 jobs to compare ({len(picked)} picked).")
        found = FineTuningJob.objects.select_related("base_model").in_bulk(picked, field_name="public_id")
        missing = [job_id for job_id in picked if job_id not in found]
        if missing:
            raise forms.ValidationError(f"No such job: {', '.join(missing)}.")
        return [found[job_id] for job_id in picked]


class BaseModelForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="The name jobs and the API use, e.g. qwen2.5-0.5b.")
    source = forms.CharField(max_length=500, help_text="A Hugging Face model id (org/name), or a folder under "
                                                       "the data folder's models/ (safetensors weights only).")
    trust_remote_code = forms.BooleanField(required=False, help_text="Let the model's own Python code run. "
                                                                    "Only for models whose authors you trust.")


def _number(text):
    """A typed number: an integer when it reads as one, else a float; the text itself when it is neither (the
    sweep's checks then name it)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


class SweepForm(forms.Form):
    """The new-job form's Sweep section (prefix `sweep`): up to three rows of a field and its values, as a grid
    (values typed comma-separated) or as N random draws (a min and a max per row, the draws from `seed`).

    `definition` (after `is_valid()`) is None when no row names a field (the form makes one job), else the
    definition `training.sweeps` takes; the sweep's own rules (ranges, the number of jobs, the fields a method
    takes) are `training.sweeps.plan`'s to check, and `add_sweep_error` puts what it refuses on the row it names.
    """

    mode = forms.ChoiceField(choices=[("grid", "Grid: every combination of the values"),
                                      ("random", "Random: N draws within the ranges")],
                             initial="grid", widget=forms.RadioSelect, required=False)
    n = forms.IntegerField(required=False, min_value=1, label="draws",
                           help_text="Random: how many jobs to draw.")
    seed = forms.IntegerField(required=False, min_value=0, max_value=2**31 - 1, label="draw seed",
                              help_text="Random: the draws repeat with the same seed. Empty: one is drawn when the "
                                        "sweep is created, and stored.")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.definition = None
        self.rows = range(1, MAX_FIELDS + 1)
        choices = [("", "— none —")] + [(name, name) for name in SWEEPABLE]
        for i in self.rows:
            self.fields[f"field_{i}"] = forms.ChoiceField(choices=choices, required=False, label="field")
            self.fields[f"values_{i}"] = forms.CharField(required=False, label="values",
                                                         help_text="Grid: comma-separated, e.g. 0.5, 1, 2.")
            self.fields[f"min_{i}"] = forms.CharField(required=False, label="min")
            self.fields[f"max_{i}"] = forms.CharField(required=False, label="max")
        if not self.is_bound:
            # A seed is in the form from the start, so that the preview's draws are those the sweep makes.
            self.initial.setdefault("seed", secrets.randbelow(2**31))

    def row_fields(self):
        """[(field, values, min, max)] bound fields of each row, for the template."""
        return [(self[f"field_{i}"], self[f"values_{i}"], self[f"min_{i}"], self[f"max_{i}"]) for i in self.rows]

    def clean(self):
        cleaned = super().clean()
        mode = cleaned.get("mode") or "grid"
        fields = {}
        for i in self.rows:
            name = cleaned.get(f"field_{i}")
            typed = [cleaned.get(key, "").strip() for key in (f"values_{i}", f"min_{i}", f"max_{i}")]
            if not name:
                if any(typed):
                    self.add_error(f"field_{i}", "Pick the field these values are for, or clear them.")
                continue
            if name in fields:
                self.add_error(f"field_{i}", f"{name} is in another row already.")
                continue
            if mode == "grid":
                fields[name] = [_number(part) for part in _split_list(typed[0])]
            else:
                fields[name] = {"min": _number(typed[1]) if typed[1] else None,
                                "max": _number(typed[2]) if typed[2] else None}
        if fields and not self._errors:
            self.definition = {"mode": mode, "fields": fields}
            if mode == "random":
                self.definition.update({"n": cleaned.get("n"), "seed": cleaned.get("seed")})
        return cleaned

    def _row_of(self, name):
        return next((i for i in self.rows if self.cleaned_data.get(f"field_{i}") == name), None)

    def add_sweep_error(self, param, message, method):
        """Put an error of `training.sweeps` (param `sweep.fields.<name>[<index>]`, `….min`, `sweep.n`, …) on the
        input it is about: a field the method cannot sweep on its row's field, a value on its values (or min / max)."""
        parts = param.split(".")
        if parts[:2] != ["sweep", "fields"] or len(parts) < 3:
            key = {"sweep.n": "n", "sweep.seed": "seed", "sweep.mode": "mode"}.get(param)
            self.add_error(key, message)
            return
        name = parts[2].split("[", 1)[0]
        row = self._row_of(name)
        if row is None:
            self.add_error(None, message)
        elif name not in sweepable_for(method):
            self.add_error(f"field_{row}", message)
        elif parts[-1] in ("min", "max"):
            self.add_error(f"{parts[-1]}_{row}", message)
        else:
            self.add_error(f"values_{row}" if self.definition["mode"] == "grid" else f"min_{row}", message)
