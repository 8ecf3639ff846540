"""Web forms of the catalog; they parse input the same way as the API serializers."""

from __future__ import annotations

import json

from django import forms
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from .models import Model, Task, Visibility, model_name_validator
from .serializers import (
    EXAMPLE_HELP,
    GATED_HELP,
    TOKENIZER_HELP,
    parse_comma_list,
    parse_example,
    validate_preprocessing,
)


def help_html(text: str) -> SafeString:
    """A help text written for the API's Markdown descriptions, for a page: `code` spans as <code>, the rest
    escaped (the form templates print help texts as they are, so that links may be given)."""
    parts = text.split("`")
    if len(parts) % 2 == 0:  # an unpaired backtick stays a backtick
        parts[-2:] = [parts[-2] + "`" + parts[-1]]
    spans = zip(parts[0:-1:2], parts[1:-1:2], strict=True)  # (text before, code) pairs; the last is plain
    return format_html_join("", "{}<code>{}</code>", spans) + format_html("{}", parts[-1])


class CommaSeparatedField(forms.CharField):
    def to_python(self, value):
        return parse_comma_list(super().to_python(value) or "")

    def prepare_value(self, value):
        return ", ".join(value) if isinstance(value, list) else value


class JSONObjectFormField(forms.CharField):
    widget = forms.Textarea(attrs={"rows": 3})

    def to_python(self, value):
        text = (super().to_python(value) or "").strip()
        if not text:
            return {}
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise forms.ValidationError("Not valid JSON.") from exc
        if not isinstance(data, dict):
            raise forms.ValidationError("Expected a JSON object.")
        return data

    def prepare_value(self, value):
        return json.dumps(value) if isinstance(value, dict) else value


class ExampleFormField(forms.CharField):
    # Parsed by the form's clean(): how depends on whether a tokenizer comes with it (see parse_example).
    widget = forms.Textarea(attrs={"rows": 3})


class ExampleParsing:
    """Forms with `example` and `tokenizer`: the example is read as text when a tokenizer comes with it."""

    def clean(self):
        from rest_framework.exceptions import ValidationError

        cleaned = super().clean()
        try:
            cleaned["example"] = parse_example(cleaned.get("example"), text=bool(cleaned.get("tokenizer")))
        except ValidationError as exc:
            self.add_error("example", [str(e) for e in exc.detail])
        return cleaned


class PreprocessingField(JSONObjectFormField):
    def validate(self, value):
        from rest_framework.exceptions import ValidationError

        try:
            validate_preprocessing(value)
        except ValidationError as exc:
            raise forms.ValidationError([str(e) for e in exc.detail]) from exc


class ModelUploadForm(ExampleParsing, forms.Form):
    name = forms.CharField(
        max_length=100,
        validators=[model_name_validator],
        help_text="Letters, digits, '.', '_' or '-'; the model's address is your-name/this-name.",
    )
    file = forms.FileField(
        allow_empty_file=True,
        help_text="ONNX (.onnx), TorchScript (torch.jit.save), torch.export (.pt2) or GGUF (.gguf, a chat "
        "model: task text-generation). Pickles and torch.save files are refused.",
    )
    task = forms.ChoiceField(choices=Task.choices, initial=Task.OTHER)
    description = forms.CharField(widget=forms.Textarea, required=False, label="Model card (Markdown)")
    tags = CommaSeparatedField(required=False, help_text="Comma-separated.")
    labels = CommaSeparatedField(required=False, help_text="Class labels in output order, comma-separated.")
    license = forms.CharField(max_length=100, required=False)
    visibility = forms.ChoiceField(choices=Visibility.choices, initial=Visibility.PUBLIC)
    gated = forms.BooleanField(required=False, help_text=GATED_HELP)
    preprocessing = PreprocessingField(
        required=False,
        help_text=help_html(
            "Image models, optional JSON: how a picture sent to the model becomes its input, e.g. "
            '`{"width": 224, "height": 224, "mode": "RGB", "layout": "NCHW", "scale": 0.00392, '
            '"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}`.'
        ),
    )
    signature = JSONObjectFormField(
        required=False,
        help_text=help_html(
            'Only for TorchScript without recorded shapes: `{"inputs": [{"name": …, "datatype": "FP32", '
            '"shape": [-1, 64]}]}`'
        ),
    )
    notes = forms.CharField(
        required=False, max_length=10_000, help_text="About this first version, shown in its versions list."
    )
    example = ExampleFormField(required=False, help_text=help_html(EXAMPLE_HELP))
    tokenizer = forms.FileField(
        required=False, label="Tokenizer (tokenizer.json)", help_text=help_html(TOKENIZER_HELP)
    )

    def __init__(self, *args, owner=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.owner = owner

    def clean_name(self):
        name = self.cleaned_data["name"]
        if self.owner and Model.objects.filter(owner=self.owner, name__iexact=name).exists():
            raise forms.ValidationError(f"You already have a model named {name!r}.")
        return name


class VersionUploadForm(ExampleParsing, forms.Form):
    file = forms.FileField(allow_empty_file=True)
    notes = forms.CharField(required=False, max_length=10_000)
    signature = JSONObjectFormField(required=False, help_text="Only for TorchScript without recorded shapes.")
    example = ExampleFormField(required=False, help_text=help_html(EXAMPLE_HELP))
    tokenizer = forms.FileField(
        required=False, label="Tokenizer (tokenizer.json)", help_text=help_html(TOKENIZER_HELP)
    )


class ModelEditForm(forms.ModelForm):
    tags = CommaSeparatedField(required=False, help_text="Comma-separated.")
    labels = CommaSeparatedField(required=False, help_text="Comma-separated, in output order.")
    preprocessing = PreprocessingField(required=False)

    class Meta:
        model = Model
        fields = ["task", "description", "tags", "labels", "license", "visibility", "gated", "preprocessing"]
        help_texts = {"gated": GATED_HELP}
        labels = {"description": "Model card (Markdown)"}
