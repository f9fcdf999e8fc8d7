"""Teams, memberships, user limits and model access in the Django admin (site staff)."""

from __future__ import annotations

from django.contrib import admin

from teams.models import Membership, ModelAccess, ProviderAccess, Team, UserLimits

LIMITS = (
    "Limits (empty: the site default in settings)",
    {
        "fields": [
            "tokens_per_day",
            "tokens_per_month",
            "cost_per_day",
            "cost_per_month",
            "requests_per_minute",
        ]
    },
)


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]
    fields = [
        "user",
        "role",
        "tokens_per_day",
        "tokens_per_month",
        "cost_per_day",
        "cost_per_month",
        "requests_per_minute",
    ]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]
    search_fields = ["name"]
    fieldsets = [(None, {"fields": ["name"]}), LIMITS]
    inlines = [MembershipInline]


@admin.register(UserLimits)
class UserLimitsAdmin(admin.ModelAdmin):
    list_display = [
        "user",
        "tokens_per_day",
        "tokens_per_month",
        "cost_per_day",
        "cost_per_month",
        "requests_per_minute",
    ]
    autocomplete_fields = ["user"]
    search_fields = ["user__username", "user__email"]
    fieldsets = [(None, {"fields": ["user"]}), LIMITS]


@admin.register(ProviderAccess)
class ProviderAccessAdmin(admin.ModelAdmin):
    list_display = ["provider"]
    filter_horizontal = ["teams"]


@admin.register(ModelAccess)
class ModelAccessAdmin(admin.ModelAdmin):
    list_display = ["chat_model"]
    filter_horizontal = ["teams"]
