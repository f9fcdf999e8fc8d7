from __future__ import annotations

from django import forms

from teams.models import Membership


class LimitsForm(forms.Form):
    tokens_per_day = forms.IntegerField(required=False, min_value=0, label="Tokens per day")
    tokens_per_month = forms.IntegerField(required=False, min_value=0, label="Tokens per month")
    cost_per_day = forms.DecimalField(
        required=False, min_value=0, max_digits=12, decimal_places=2, label="Cost per day (USD)"
    )
    cost_per_month = forms.DecimalField(
        required=False, min_value=0, max_digits=12, decimal_places=2, label="Cost per month (USD)"
    )
    requests_per_minute = forms.IntegerField(
        required=False, min_value=0, label="Requests per minute"
    )


class AddMemberForm(forms.Form):
    who = forms.CharField(label="Username or e-mail address", max_length=254)
    role = forms.ChoiceField(choices=Membership.Role.choices, initial=Membership.Role.MEMBER)


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=Membership.Role.choices)


class TeamForm(forms.Form):
    name = forms.CharField(max_length=100, label="Team name")
