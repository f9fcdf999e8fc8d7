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
from conversations.search import search as search_conversations
from teams.selectors import model_default_for, team_picker

PARTIALS = "conversations/partials.html"


def _owned(request: HttpRequest, conversation_id: UUID) -> Conversation:
    try:
        return selectors.conversation_get_for_user(
            user=request.user, conversation_id=conversation_id
        )
    except ConversationNotFound:
        raise Http404("This conversation does not exist.") from None


def _message_param(request: HttpRequest, name: str) -> int | None:
    try:
        value = int(request.GET.get(name, ""))
    except ValueError:
        return None
    return value if 0 < value < 2**63 else None


def _page_context(
    request: HttpRequest,
    conversation: Conversation | None,
    panel: settings_panel.SettingsPanel | None = None,
    *,
    target: int | None = None,
) -> dict:
    picker = team_picker(
        user=request.user, current_team_id=conversation.team_id if conversation else None
    )
    team = next((m.team for m in picker.memberships if m.team_id == picker.selected_id), None)
    thread = None
    if conversation is not None:
        # A link to one message (from search) shows the branch through it, without storing
        # that choice: only sending from it, or the version arrows, change the branch stored.
        leaf = selectors.leaf_through(conversation=conversation, message_id=target)
        thread = selectors.thread_window(conversation=conversation, leaf_id=leaf, include=target)
    default_model = model_default_for(team=team)
    model = (conversation.model if conversation else None) or default_model
    return {
        "conversation": conversation,
        "thread": thread,
        "divider": selectors.context_divider(
            reply_id=selectors.latest_reply_id(thread.messages) if thread else None
        ),
        "sidebar": selectors.sidebar_page(user=request.user),
        "current_id": conversation.id if conversation else None,
        "default_model": default_model,
        "max_message_chars": settings.CHAT_MAX_MESSAGE_CHARS,
        "panel": panel or settings_panel.build(user=request.user, conversation=conversation),
        "context_window": (model.context_window if model else settings.CHAT_DEFAULT_CONTEXT_WINDOW),
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
    context = _page_context(request, conversation, target=_message_param(request, "message"))
    return render(request, "conversations/chat.html", context)


@login_required
@require_GET
def conversation_messages(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    """Older messages of a branch, above ``before`` (the "load earlier messages" sentinel)."""
    conversation = _owned(request, conversation_id)
    before = _message_param(request, "before")
    if before is None:
        raise Http404("This message does not exist.")
    thread = selectors.thread_window(conversation=conversation, before=before)
    # The divider of the latest reply may stand above one of these older messages.
    divider = selectors.context_divider(reply_id=conversation.current_leaf_id)
    return render(
        request,
        f"{PARTIALS}#thread-page",
        {"thread": thread, "conversation": conversation, "divider": divider},
    )


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


def _flag(request: HttpRequest, name: str) -> bool:
    return request.POST.get(name, "") in ("1", "true", "on")


def _header_response(request: HttpRequest, conversation: Conversation) -> HttpResponse:
    """The conversation's header, and the sidebar it may have moved in (pinned first,
    archived ones gone)."""
    if not request.htmx:
        return redirect("conversation_detail", conversation_id=conversation.id)
    return render(
        request,
        f"{PARTIALS}#conversation-title",
        {
            "conversation": conversation,
            "current_id": conversation.id,
            "sidebar": selectors.sidebar_page(user=request.user),
            "refresh_sidebar": True,
        },
    )


@login_required
@require_POST
def conversation_pin(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    services.conversation_set_pinned(conversation=conversation, pinned=_flag(request, "pinned"))
    return _header_response(request, conversation)


@login_required
@require_POST
def conversation_archive(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    services.conversation_set_archived(
        conversation=conversation, archived=_flag(request, "archived")
    )
    if request.POST.get("next") == "archive":
        # From the Archive page: stay there, with the list as it now is.
        return redirect("archive")
    return _header_response(request, conversation)


@login_required
@require_GET
def archive(request: HttpRequest) -> HttpResponse:
    try:
        page = int(request.GET.get("page", "1"))
    except ValueError:
        page = 1
    context = {
        "archive": selectors.archive_page(user=request.user, page=page),
        "sidebar": selectors.sidebar_page(user=request.user),
        "current_id": None,
    }
    if request.htmx and page > 1:
        return render(request, f"{PARTIALS}#archive-page", context)
    return render(request, "conversations/archive.html", context)


@login_required
@require_GET
def search(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "")
    context = {
        "results": search_conversations(user=request.user, query=query),
        "query": query,
        "sidebar": selectors.sidebar_page(user=request.user),
        "current_id": None,
    }
    if request.htmx and request.headers.get("HX-Target") == "search-results":
        return render(request, f"{PARTIALS}#search-results", context)
    return render(request, "conversations/search.html", context)


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
