"""Usage records and the audit log in the Django admin: read-only, filterable, with the totals
of whatever the filters select (computed in the database over the filtered queryset)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.paginator import Paginator
from django.db.models import Count, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils.functional import cached_property

from usage.models import ConversationReview, Outcome, UsageRecord


class TotalsPaginator(Paginator):
    """Counts the filtered records with the same query that adds up their totals: one pass
    over them instead of two."""

    @cached_property
    def totals(self) -> dict[str, Any]:
        totals = self.object_list.order_by().aggregate(
            calls=Count("id"),
            errors=Count("id", filter=Q(outcome=Outcome.ERROR)),
            prompt_tokens=Sum("prompt_tokens"),
            completion_tokens=Sum("completion_tokens"),
            cost=Sum("cost"),
        )
        totals["tokens"] = (totals["prompt_tokens"] or 0) + (totals["completion_tokens"] or 0)
        return totals

    @cached_property
    def count(self) -> int:
        return self.totals["calls"]


class _ReadOnly(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(_ReadOnly):
    list_display = [
        "started_at",
        "username",
        "team_name",
        "provider_name",
        "model_name",
        "kind",
        "outcome",
        "error_kind",
        "prompt_tokens",
        "completion_tokens",
        "tokens_estimated",
        "cost",
        "ttft_ms",
        "duration_ms",
        "retries",
    ]
    list_filter = [
        ("started_at", admin.DateFieldListFilter),
        "outcome",
        "kind",
        "tokens_estimated",
        "team",
        "provider",
        "model",
        "user",
    ]
    search_fields = ["username", "team_name", "model_name", "call_id"]
    # No COUNT(*) of the whole table on every page, and no date drill-down (it runs a DISTINCT
    # over the filtered records); the list is paged by the (-started_at, -id) index.
    show_full_result_count = False
    # Per-option counts would each scan the filtered records.
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100
    ordering = ["-started_at", "-id"]
    exclude = ["conversation"]
    readonly_fields = ["conversation_id"]

    paginator = TotalsPaginator

    def changelist_view(
        self, request: HttpRequest, extra_context: dict | None = None
    ) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if context and "cl" in context:
            context["usage_totals"] = context["cl"].paginator.totals
        return response


@admin.register(ConversationReview)
class ConversationReviewAdmin(_ReadOnly):
    list_display = ["viewed_at", "viewer_name", "owner_name", "conversation_key", "ip_address"]
    list_filter = [("viewed_at", admin.DateFieldListFilter), "viewer"]
    search_fields = ["viewer_name", "owner_name", "conversation_key"]
