"""HTTP views: adapters that parse, authorize through the selectors, call one service, render.

Pages, htmx swaps and websocket pushes render the same partials (templates/conversations/).
"""

from __future__ import annotations

from uuid import UUID

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from conversations import selectors, services, settings_panel
from conversations.errors import ChatError, ConversationNotFound
from conversations.forms import ChatSettingsForm
from conversations.models import Conversation
from teams.selectors import model_default_for, team_picker

PARTIALS = "conversations/partials.html"


def _owned(request: HttpRequest, conversation_id: UUID) -> Conversation:
    try:
        return selectors.conversation_get_for_user(
            user=request.user, conversation_id=conversation_id
        )
    except ConversationNotFound:
        raise Http404("This conversation does not exist.") from None


def _page_context(
    request: HttpRequest,
    conversation: Conversation | None,
    panel: settings_panel.SettingsPanel | None = None,
) -> dict:
    messages = selectors.messages_on_path(conversation=conversation) if conversation else []
    picker = team_picker(
        user=request.user, current_team_id=conversation.team_id if conversation else None
    )
    team = next((m.team for m in picker.memberships if m.team_id == picker.selected_id), None)
    return {
        "conversation": conversation,
        "messages": messages,
        "divider": selectors.context_divider(reply_id=selectors.latest_reply_id(messages)),
        "sidebar": selectors.sidebar_page(user=request.user),
        "current_id": conversation.id if conversation else None,
        "default_model": model_default_for(team=team),
        "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        "panel": panel or settings_panel.build(user=request.user, conversation=conversation),
        "team_picker": picker,
    }


@login_required
@require_GET
def chat_home(request: HttpRequest) -> HttpResponse:
    return render(request, "conversations/chat.html", _page_context(request, None))


@login_required
@require_GET
def conversation_detail(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    return render(request, "conversations/chat.html", _page_context(request, conversation))


@login_required
@require_GET
def sidebar(request: HttpRequest) -> HttpResponse:
    try:
        page = int(request.GET.get("page", "1"))
    except ValueError:
        page = 1
    current = request.GET.get("current") or None
    return render(
        request,
        f"{PARTIALS}#sidebar-page",
        {"sidebar": selectors.sidebar_page(user=request.user, page=page), "current_id": current},
    )


@login_required
@require_POST
def conversation_rename(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    error = ""
    try:
        services.conversation_rename(conversation=conversation, title=request.POST.get("title", ""))
    except ChatError as exc:
        error = exc.message
    if not request.htmx:
        return redirect("conversation_detail", conversation_id=conversation.id)
    return render(
        request,
        f"{PARTIALS}#conversation-title",
        {"conversation": conversation, "rename_error": error, "current_id": conversation.id},
    )


@login_required
@require_POST
def conversation_delete(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    services.conversation_delete(conversation=conversation)
    if request.htmx:
        return HttpResponseClientRedirect("/")
    return redirect("chat_home")


@login_required
@require_POST
def conversation_context_strategy(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    error = ""
    try:
        services.conversation_set_context_strategy(
            conversation=conversation, strategy=request.POST.get("strategy", "")
        )
    except ChatError as exc:
        error = exc.message
    if not request.htmx:
        return redirect("conversation_detail", conversation_id=conversation.id)
    return render(
        request,
        f"{PARTIALS}#context-strategy",
        {"conversation": conversation, "strategy_error": error, "strategy_saved": not error},
    )


def _save_settings(request: HttpRequest, conversation: Conversation | None) -> HttpResponse:
    """POST of the settings panel, for a conversation or (None) for the next new chat."""
    form = ChatSettingsForm(request.POST)
    saved = False
    parsed = form.is_valid()
    fields = {
        "model_id": form.cleaned_data.get("model"),
        "system_prompt": form.cleaned_data.get("system_prompt", ""),
        "params": form.params(),
    }
    try:
        if not parsed:
            # Nothing is saved, but every other problem is reported along with the typos.
            services.chat_settings_validate(**fields)
        elif conversation is None:
            services.new_chat_settings_update(user=request.user, **fields)
            saved = True
        else:
            services.conversation_settings_update(conversation=conversation, **fields)
            saved = True
    except services.SettingsInvalid as exc:
        for name, message in exc.errors.items():
            if name not in form.errors:
                form.add_error(name if name in form.fields else None, message)
    if saved and not request.htmx:
        if conversation is None:
            return redirect("chat_home")
        return redirect("conversation_detail", conversation_id=conversation.id)
    panel = settings_panel.build(
        user=request.user,
        conversation=conversation,
        form=None if saved else form,
        saved=saved,
        open=True,
    )
    if not request.htmx:
        context = _page_context(request, conversation, panel)
        return render(request, "conversations/chat.html", context)
    return render(request, f"{PARTIALS}#settings-panel", {"panel": panel})


@login_required
@require_http_methods(["GET", "POST"])
def conversation_settings(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    if request.method == "POST":
        return _save_settings(request, conversation)
    panel = settings_panel.build(user=request.user, conversation=conversation)
    return render(request, f"{PARTIALS}#settings-panel", {"panel": panel})


@login_required
@require_POST
def new_chat_settings(request: HttpRequest) -> HttpResponse:
    return _save_settings(request, None)
