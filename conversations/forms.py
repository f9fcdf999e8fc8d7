"""The conversation settings form: parses what the browser sent into a model id, a system prompt
and the parameters that were set. The rules (ranges, what a model accepts) live in
providers.params and conversations.services, so this form only turns text into values."""

from __future__ import annotations

from typing import Any

from django import forms

from providers.params import JSON_MODE, PARAMS

_NUMBER_ERRORS = {"invalid": "Enter a number, or leave it empty for the model's default."}
_WHOLE_ERRORS = {
    "invalid": "Enter a whole number, or leave it empty for the model's default.",
}


def _param_field(kind: str) -> forms.Field:
    if kind == "float":
        return forms.FloatField(required=False, error_messages=_NUMBER_ERRORS)
    if kind == "int":
        return forms.IntegerField(required=False, error_messages=_WHOLE_ERRORS)
    return forms.CharField(required=False, strip=False)  # stop: one sequence per line


class ChatSettingsForm(forms.Form):
    model = forms.CharField(required=False)
    system_prompt = forms.CharField(required=False, strip=True)
    json_mode = forms.BooleanField(required=False)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for spec in PARAMS:
            self.fields[spec.name] = _param_field(spec.kind)

    def params(self) -> dict[str, object]:
        """The parameters that were set (empty fields are left out)."""
        params: dict[str, object] = {}
        for spec in PARAMS:
            value = self.cleaned_data.get(spec.name)
            if spec.kind == "stop":
                lines = [line for line in (value or "").splitlines() if line.strip()]
                if lines:
                    params[spec.name] = lines
            elif value is not None:
                params[spec.name] = value
        if self.cleaned_data.get(JSON_MODE):
            params[JSON_MODE] = True
        return params

    @staticmethod
    def initial_from(*, model_id: int | None, system_prompt: str, params: dict) -> dict:
        initial: dict[str, object] = {"model": model_id or "", "system_prompt": system_prompt}
        for key, value in params.items():
            initial[key] = "\n".join(value) if key == "stop" and isinstance(value, list) else value
        return initial
