from __future__ import annotations

from datetime import date
from typing import Any

from django import forms

from usage.selectors import MAX_DAYS, default_range


class RangeForm(forms.Form):
    start = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(required=False, widget=forms.DateInput(attrs={"type": "date"}))
    team = forms.CharField(required=False)
    stack = forms.ChoiceField(
        required=False, choices=[("model", "by model"), ("user", "by user")], initial="model"
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        default_start, default_end = default_range()
        start: date = data.get("start") or default_start
        end: date = data.get("end") or default_end
        if end < start:
            raise forms.ValidationError("The end date is before the start date.")
        if (end - start).days + 1 > MAX_DAYS:
            raise forms.ValidationError(f"Choose at most {MAX_DAYS} days.")
        data["start"], data["end"] = start, end
        data["stack"] = data.get("stack") or "model"
        return data
