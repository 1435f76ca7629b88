"""Forms: starting a comparison, rating, and creating a rating task."""

import json
import re

from django import forms
from django.contrib.auth.models import User
from django.db.models import Q

from config.access import EVALUATORS_GROUP
from playground.inference import InferenceError, SamplingParams, validate_messages
from playground.models import Comparison
from playground.snapshots import UnknownModel, list_snapshots, resolve_snapshot

MAX_TASK_PROMPTS = 500


def _sampling_errors(form, data):
    """Run SamplingParams' checks and put each error on its field."""
    try:
        return SamplingParams.from_dict(data)
    except InferenceError as exc:
        form.add_error(exc.param if exc.param in form.fields else None, exc.message)
        return None


class CompareSnapshotsForm(forms.Form):
    """What the compare page posts. `snapshots` and `messages` are JSON lists built by the page."""

    snapshots = forms.CharField(help_text="A JSON list of snapshot names, 1 to 8.")
    messages = forms.CharField(help_text="A JSON list of {role, content}, the last one from the user.")
    temperature = forms.FloatField(required=False, initial=0.7)
    top_p = forms.FloatField(required=False, initial=1.0)
    max_tokens = forms.IntegerField(required=False, initial=256)
    seed = forms.IntegerField(required=False)
    blind = forms.BooleanField(required=False)

    def clean_snapshots(self):
        try:
            names = json.loads(self.cleaned_data["snapshots"])
        except (ValueError, RecursionError):
            raise forms.ValidationError("Not a JSON list of snapshot names.") from None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise forms.ValidationError("Not a JSON list of snapshot names.")
        names = [name.strip() for name in names]
        if not names:
            raise forms.ValidationError("Pick at least one snapshot.")
        if len(names) > Comparison.MAX_SNAPSHOTS:
            raise forms.ValidationError(f"Pick at most {Comparison.MAX_SNAPSHOTS} snapshots; got {len(names)}.")
        if len(set(names)) != len(names):
            raise forms.ValidationError("A snapshot is picked twice.")
        unknown = []
        for name in names:
            try:
                resolve_snapshot(name)
            except UnknownModel:
                unknown.append(name)
        if unknown:
            raise forms.ValidationError("Unknown model(s): " + ", ".join(unknown) + ".")
        return names

    def clean_messages(self):
        try:
            return validate_messages(json.loads(self.cleaned_data["messages"]))
        except (ValueError, RecursionError):
            raise forms.ValidationError("Not a JSON list of messages.") from None
        except InferenceError as exc:
            raise forms.ValidationError(exc.message) from None

    def clean(self):
        data = super().clean()
        params = _sampling_errors(self, data)
        if params is not None:
            data["params"] = params.as_dict()
        return data


def rater_choices():
    return User.objects.filter(Q(is_staff=True) | Q(groups__name=EVALUATORS_GROUP), is_active=True) \
        .distinct().order_by("username")


class _RaterChoice(forms.ModelMultipleChoiceField):
    def _check_values(self, value):
        # A user id the database cannot hold (30 digits) is an unknown choice, not a database error.
        for pk in value:
            if not re.fullmatch(r"[0-9]{1,18}", str(pk)):
                raise forms.ValidationError(self.error_messages["invalid_pk_value"], code="invalid_pk_value",
                                            params={"pk": str(pk)[:40]})
        return super()._check_values(value)


class RatingTaskForm(forms.Form):
    name = forms.CharField(max_length=200)
    snapshots = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple,
                                          help_text="2 to 8 snapshots; every prompt goes to each of them.")
    prompt_source = forms.ChoiceField(choices=[("demo", "The demo held-out prompts"), ("upload", "A JSONL file")],
                                      initial="demo", widget=forms.RadioSelect)
    prompts_file = forms.FileField(required=False, help_text=(
        'One JSON object per line: {"messages": [...]} (a trailing assistant message becomes the expected '
        f'answer) or {{"prompt": "..."}}; at most {MAX_TASK_PROMPTS} lines.'))
    evaluators = _RaterChoice(queryset=User.objects.none(), widget=forms.CheckboxSelectMultiple)
    temperature = forms.FloatField(required=False, initial=0.7)
    top_p = forms.FloatField(required=False, initial=1.0)
    max_tokens = forms.IntegerField(required=False, initial=64)
    seed = forms.IntegerField(required=False, initial=0)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["snapshots"].choices = [(s.name, s.label) for s in list_snapshots(limit=300)]
        self.fields["evaluators"].queryset = rater_choices()

    def clean_snapshots(self):
        names = self.cleaned_data["snapshots"]
        if not 2 <= len(names) <= Comparison.MAX_SNAPSHOTS:
            raise forms.ValidationError(f"Pick 2 to {Comparison.MAX_SNAPSHOTS} snapshots; got {len(names)}.")
        if len(set(names)) != len(names):
            raise forms.ValidationError("A snapshot is picked twice.")
        return names

    def clean(self):
        data = super().clean()
        params = _sampling_errors(self, data)
        if params is not None:
            data["params"] = params.as_dict()
        if data.get("prompt_source") == "upload":
            upload = data.get("prompts_file")
            if not upload:
                self.add_error("prompts_file", "Choose a JSONL file, or use the demo prompts.")
            else:
                prompts, errors = read_prompts(upload.read())
                for error in errors[:20]:
                    self.add_error("prompts_file", error)
                data["prompts"] = prompts
        return data


def read_prompts(raw):
    """Prompts from JSONL bytes: ([{messages, expected}], ["line N: what is wrong"])."""
    prompts, errors = [], []
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return [], [f"The file is not UTF-8 text (byte {exc.start})."]
    # Lines end at "\n" only: str.splitlines would also split at characters a JSON string may hold (U+2028, \x0c).
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            errors.append(f"line {number}: not valid JSON ({exc.msg}).")
            continue
        except RecursionError:
            errors.append(f"line {number}: arrays or objects nested too deeply to read.")
            continue
        if not isinstance(row, dict):
            errors.append(f"line {number}: must be a JSON object.")
            continue
        expected = row.get("expected", "")
        if "messages" in row:
            messages = row["messages"]
            if isinstance(messages, list) and messages and isinstance(messages[-1], dict) \
                    and messages[-1].get("role") == "assistant":
                expected = expected or messages[-1].get("content") or ""
                messages = messages[:-1]
        elif isinstance(row.get("prompt"), str):
            messages = [{"role": "user", "content": row["prompt"]}]
        else:
            errors.append(f'line {number}: needs "messages" (a chat ending with a user turn) or "prompt".')
            continue
        try:
            messages = validate_messages(messages)
        except InferenceError as exc:
            errors.append(f"line {number}: {exc.message}")
            continue
        prompts.append({"messages": messages, "expected": expected if isinstance(expected, str) else ""})
    if not prompts and not errors:
        errors.append("The file has no prompts.")
    if len(prompts) > MAX_TASK_PROMPTS:
        errors.append(f"The file has {len(prompts)} prompts; at most {MAX_TASK_PROMPTS} fit in one task.")
    return prompts, errors
