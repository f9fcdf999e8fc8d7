"""Form parsing for the share settings and the import upload; the rules live in services."""

from __future__ import annotations

from django import forms

from sharing.models import Share
from sharing.services import ShareSettings


class ShareForm(forms.Form):
    visibility = forms.ChoiceField(
        choices=Share.Visibility.choices,
        error_messages={"required": "Choose who may open the link."},
    )
    expires_on = forms.DateField(
        required=False, error_messages={"invalid": "Enter the expiry as a date, or leave it empty."}
    )
    include_system_prompt = forms.BooleanField(required=False)

    def share_settings(self) -> ShareSettings:
        data = self.cleaned_data
        return ShareSettings(
            visibility=data["visibility"],
            expires_on=data["expires_on"],
            include_system_prompt=data["include_system_prompt"],
        )

    def first_error(self) -> str:
        for errors in self.errors.values():
            return str(errors[0])
        return ""
