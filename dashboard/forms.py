from django import forms

from training.models import BaseModel


class UploadForm(forms.Form):
    file = forms.FileField(help_text="A JSONL file: one chat example (or one preference pair) per line.")


class StatsModelForm(forms.Form):
    base_model = forms.ModelChoiceField(queryset=BaseModel.objects.all(), required=False,
                                        help_text="Token counts use this base model's tokenizer and chat template.")


class EvaluatorForm(forms.Form):
    username = forms.RegexField(regex=r"^[\w.@+-]{2,150}$", max_length=150,
                                help_text="Letters, digits and @/./+/-/_ only.")
    role = forms.ChoiceField(choices=[("evaluator", "Evaluator"), ("admin", "Admin")], initial="evaluator")
