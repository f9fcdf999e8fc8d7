"""Admin forms for providers and models.

The API key is write-only: the form has no field bound to the stored key, only a password
input that is never rendered with a value (blank keeps the stored key) and a "clear" box.
Secret-looking extra header values are shown as a placeholder that means "unchanged".
"""

from __future__ import annotations

import json
from typing import Any

from django import forms

from providers.headers import HeaderError, clean_headers, headers_for_display
from providers.models import ChatModel, Provider
from providers.params import (
    ACCEPTABLE_PARAMS,
    JSON_MODE,
    PARAM_BY_NAME,
    ParamError,
    clean_params,
)
from providers.presets import PRESETS


class ProviderForm(forms.ModelForm):
    new_api_key = forms.CharField(
        label="API key",
        required=False,
        strip=True,
        max_length=500,
        # new-password: browsers must not fill in the admin's own saved password here.
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    clear_api_key = forms.BooleanField(
        label="Remove the stored API key",
        required=False,
        help_text="For providers that need no key, such as a local server.",
    )
    extra_headers_text = forms.CharField(
        label="Extra headers",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "spellcheck": "false"}),
        help_text='A JSON object sent with every request, e.g. {"X-Title": "Team Chat"}. '
        "Values of secret-looking headers (key, token, auth…) are never shown again.",
    )
    from_preset = forms.ChoiceField(
        choices=[("", "")] + [(key, p.name) for key, p in PRESETS.items()],
        required=False,
        widget=forms.HiddenInput,
    )

    class Meta:
        model = Provider
        # Not api_key nor extra_headers: they are written through the fields above only.
        # base_url comes from the admin's fieldsets (ProviderAdmin.formfield_for_dbfield).
        fields = [
            "name",
            "enabled",
            "include_usage",
            "max_retries",
            "connect_timeout",
            "first_byte_timeout",
            "idle_timeout",
            "total_timeout",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stored = self.instance.pk is not None and bool(self.instance.api_key)
        if "new_api_key" in self.fields:
            self.fields["new_api_key"].help_text = (
                "A key is stored. It is never shown; leave this blank to keep it, or type a "
                "new one to replace it."
                if stored
                else "No key is stored. It is never shown again once saved."
            )
        if "extra_headers_text" in self.fields and self.instance.pk is not None:
            shown = headers_for_display(self.instance.extra_headers)
            self.initial["extra_headers_text"] = json.dumps(shown, indent=2) if shown else ""

    def clean_extra_headers_text(self) -> dict[str, str]:
        stored = self.instance.extra_headers if self.instance.pk is not None else {}
        try:
            return clean_headers(self.cleaned_data.get("extra_headers_text", ""), stored)
        except HeaderError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("new_api_key") and data.get("clear_api_key"):
            self.add_error(
                "clear_api_key", "Either type a new key or remove the stored one, not both."
            )
        total = data.get("total_timeout")
        for name in ("connect_timeout", "first_byte_timeout"):
            value = data.get(name)
            if total is not None and value is not None and value > total:
                self.add_error(
                    "total_timeout",
                    "The total timeout must be at least as long as the connect and first-byte "
                    "timeouts.",
                )
                break
        return data

    def save(self, commit: bool = True) -> Provider:
        provider = super().save(commit=False)
        if self.cleaned_data.get("clear_api_key"):
            provider.api_key = ""
        elif self.cleaned_data.get("new_api_key"):
            provider.api_key = self.cleaned_data["new_api_key"]
        if "extra_headers_text" in self.cleaned_data:
            provider.extra_headers = self.cleaned_data["extra_headers_text"]
        if commit:
            provider.save()
            self.save_m2m()
        return provider


class ChatModelForm(forms.ModelForm):
    accepted_params = forms.MultipleChoiceField(
        label="Accepted parameters",
        choices=[(name, f"{PARAM_BY_NAME[name].label} ({name})") for name in ACCEPTABLE_PARAMS],
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="What users may set for this model. The reply length (max_tokens) is always "
        "sent; JSON mode follows the box below.",
    )
    default_params = forms.JSONField(
        label="Default parameters",
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "spellcheck": "false"}),
        help_text="A JSON object sent unless a conversation sets its own value, e.g. "
        '{"temperature": 0.7, "top_p": 0.9}. Parameters of your own server (min_p, '
        "repetition_penalty…) are passed through as they are.",
    )

    class Meta:
        model = ChatModel
        fields = [
            "provider",
            "name",
            "display_name",
            "enabled",
            "is_default",
            "context_window",
            "max_output_tokens",
            "max_tokens_param",
            "input_price_per_mtok",
            "output_price_per_mtok",
            "accepted_params",
            "default_params",
            "streams_reasoning",
            "accepts_tools",
            "accepts_json_mode",
            "context_strategy",
            "use_for_summaries",
        ]

    def clean_default_params(self) -> dict[str, object]:
        raw = self.cleaned_data.get("default_params")
        if raw in (None, ""):
            return {}
        try:
            return clean_params(raw, allow_extra=True)
        except ParamError as exc:
            raise forms.ValidationError(list(exc.errors.values())) from None

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        defaults = data.get("default_params") or {}
        accepted = set(data.get("accepted_params") or ())
        for name in defaults:
            if name in ACCEPTABLE_PARAMS and name not in accepted:
                self.add_error(
                    "default_params",
                    f"{name} has a default but is not among the accepted parameters.",
                )
        if defaults.get(JSON_MODE) and not data.get("accepts_json_mode"):
            self.add_error("default_params", "JSON mode is on by default but not accepted.")
        limit = data.get("max_output_tokens")
        max_tokens = defaults.get("max_tokens")
        if isinstance(max_tokens, int) and limit and max_tokens > limit:
            self.add_error(
                "default_params",
                f"max_tokens ({max_tokens}) is more than the model's max output tokens ({limit}).",
            )
        return data

    def clean_accepted_params(self) -> list[str]:
        chosen = set(self.cleaned_data.get("accepted_params") or ())
        return [name for name in ACCEPTABLE_PARAMS if name in chosen]
