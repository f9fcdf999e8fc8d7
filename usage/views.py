"""The usage dashboard, its CSV, and staff review of a conversation (audited).

Adapters: parse, authorize through usage.selectors.usage_scope_for, one read, render.
"""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.views.decorators.http import require_GET

from conversations import selectors as conversation_selectors
from conversations.models import Conversation
from teams.selectors import TeamNotFound
from usage import export, services
from usage.forms import RangeForm
from usage.selectors import Dashboard, default_range, usage_dashboard, usage_scope_for


def _dashboard(request: HttpRequest) -> tuple[Dashboard, RangeForm]:
    form = RangeForm(request.GET or None)
    if form.is_bound and form.is_valid():
        start, end = form.cleaned_data["start"], form.cleaned_data["end"]
        stack, team = form.cleaned_data["stack"], form.cleaned_data["team"]
    else:
        # An invalid range is shown as an error above the default range, not as a failure.
        start, end = default_range()
        stack, team = request.GET.get("stack", "model"), request.GET.get("team", "")
    try:
        scope = usage_scope_for(user=request.user, team=team)
    except TeamNotFound:
        raise Http404("This team does not exist.") from None
    return usage_dashboard(scope=scope, start=start, end=end, stack=stack), form


@login_required
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    data, form = _dashboard(request)
    query = request.GET.urlencode()
    return render(
        request,
        "usage/dashboard.html",
        {
            "dashboard": data,
            "form": form,
            "chart_data": data.chart_data(),
            "csv_query": query,
            "can_review": request.user.is_staff and settings.USAGE_STAFF_CAN_READ_CONVERSATIONS,
        },
    )


@login_required
@require_GET
def dashboard_csv(request: HttpRequest) -> HttpResponse:
    data, _ = _dashboard(request)
    response = HttpResponse(export.dashboard_csv(data), content_type="text/csv; charset=utf-8")
    filename = f"usage-{data.start.isoformat()}-to-{data.end.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@login_required
@require_GET
def conversation_review(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    """Staff read someone's conversation, when the site allows it; every view is audited."""
    if not (settings.USAGE_STAFF_CAN_READ_CONVERSATIONS and request.user.is_staff):
        raise Http404("This conversation does not exist.")
    conversation = get_object_or_404(
        Conversation.objects.select_related("owner", "model"), id=conversation_id
    )
    services.conversation_review_record(
        viewer=request.user, conversation=conversation, ip_address=request.META.get("REMOTE_ADDR")
    )
    return render(
        request,
        "usage/review.html",
        {
            "conversation": conversation,
            # Not "messages": the page layout shows django.contrib.messages under that name.
            "conversation_messages": conversation_selectors.messages_on_path(
                conversation=conversation
            ),
        },
    )
