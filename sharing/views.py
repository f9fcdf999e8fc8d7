"""HTTP adapters for shares, shared pages, export and import: parse, authorize, one call, render.

Owner actions load the conversation through ``conversation_get_for_user`` (someone else's id
answers 404 before anything is read or changed). The shared page is reached by token alone.
"""

from __future__ import annotations

import logging
from uuid import UUID

from django.conf import settings
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone
from django.utils.http import content_disposition_header
from django.utils.text import slugify
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from conversations.errors import ChatError, ConversationNotFound
from conversations.models import Conversation
from conversations.selectors import conversation_get_for_user
from sharing import selectors, services, transfer
from sharing.errors import ImportRefused, ShareNotFound, SignInRequired
from sharing.forms import ShareForm
from sharing.models import Share

logger = logging.getLogger(__name__)

PARTIALS = "sharing/partials.html"


def _owned(request: HttpRequest, conversation_id: UUID) -> Conversation:
    try:
        return conversation_get_for_user(user=request.user, conversation_id=conversation_id)
    except ConversationNotFound:
        raise Http404("This conversation does not exist.") from None


def _share_url(request: HttpRequest, share: Share | None) -> str:
    if share is None:
        return ""
    return request.build_absolute_uri(reverse("shared_conversation", args=[share.token]))


def _panel(
    request: HttpRequest, conversation: Conversation, *, error: str = "", notice: str = ""
) -> HttpResponse:
    """The share panel: alone for htmx (it lives in the conversation header), else as a page."""
    share = selectors.share_for_conversation(conversation=conversation)
    context = {
        "conversation": conversation,
        "share": share,
        "share_url": _share_url(request, share),
        "share_expired": share is not None and share.is_expired(),
        "expiry_min": selectors.expiry_min_date(),
        "error": error,
        "notice": notice,
    }
    if request.htmx:
        return render(request, f"{PARTIALS}#share-panel", context)
    return render(request, "sharing/share_page.html", context, status=400 if error else 200)


@login_required
@require_GET
def share_panel(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    return _panel(request, _owned(request, conversation_id))


def _save(request: HttpRequest, conversation_id: UUID, *, rotate: bool) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    form = ShareForm(request.POST)
    if not form.is_valid():
        return _panel(request, conversation, error=form.first_error())
    action = services.share_rotate if rotate else services.share_save
    try:
        share = action(conversation=conversation, settings=form.share_settings())
    except ChatError as exc:
        return _panel(request, conversation, error=exc.message)
    if rotate:
        notice = "A new link was created; the old one no longer works."
    elif share.created_at == share.updated_at:
        notice = "Link created."
    else:
        notice = "Share updated: the same link now shows the conversation as it is now."
    if request.htmx:
        return _panel(request, conversation, notice=notice)
    return redirect("share_panel", conversation_id=conversation.id)


@login_required
@require_POST
def share_save(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    return _save(request, conversation_id, rotate=False)


@login_required
@require_POST
def share_rotate(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    return _save(request, conversation_id, rotate=True)


@login_required
@require_POST
def share_revoke(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    services.share_revoke(conversation=conversation)
    from_list = request.POST.get("from") == "list"
    if request.htmx:
        if from_list:
            return HttpResponse("")  # the list's row is swapped for nothing
        return _panel(request, conversation, notice="The link was revoked.")
    if from_list:
        return redirect("share_list")
    return redirect("share_panel", conversation_id=conversation.id)


@login_required
@require_GET
def share_list(request: HttpRequest) -> HttpResponse:
    shares = selectors.shares_for_user(user=request.user)
    now = timezone.now()
    rows = [
        {"share": s, "url": _share_url(request, s), "expired": s.is_expired(now)} for s in shares
    ]
    return render(request, "sharing/shares.html", {"rows": rows})


@require_GET
@never_cache
def shared_conversation(request: HttpRequest, token: str) -> HttpResponse:
    try:
        shared = services.share_open(token=token, viewer=request.user)
    except SignInRequired:
        return redirect_to_login(request.get_full_path())
    except ShareNotFound:
        raise Http404("This link does not exist or is no longer shared.") from None
    response = render(request, "sharing/shared.html", {"shared": shared, "token": token})
    # Shared pages stay out of search engines. The site-wide Referrer-Policy (same-origin)
    # already keeps the token out of other sites' logs; "no-referrer" would make the browser
    # send "Origin: null" with the Continue form, which CSRF protection rightly refuses.
    response["X-Robots-Tag"] = "noindex, nofollow"
    return response


@require_POST
def share_continue(request: HttpRequest, token: str) -> HttpResponse:
    if not request.user.is_authenticated:
        return redirect_to_login(reverse("shared_conversation", args=[token]))
    try:
        conversation = services.share_continue(token=token, user=request.user)
    except ShareNotFound:
        raise Http404("This link does not exist or is no longer shared.") from None
    return redirect("conversation_detail", conversation_id=conversation.id)


# --- export and import -------------------------------------------------------------------------
def _download(content: bytes, *, filename: str, content_type: str) -> HttpResponse:
    response = HttpResponse(content, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


def _filename(conversation: Conversation, extension: str) -> str:
    stem = slugify(conversation.display_title, allow_unicode=True)[:60] or "conversation"
    return f"{stem}.{extension}"


@login_required
@require_GET
@never_cache
def export_json(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    document = selectors.conversation_export(conversation=conversation)
    return _download(
        transfer.to_json_bytes(document),
        filename=_filename(conversation, "json"),
        content_type="application/json; charset=utf-8",
    )


@login_required
@require_GET
@never_cache
def export_markdown(request: HttpRequest, conversation_id: UUID) -> HttpResponse:
    conversation = _owned(request, conversation_id)
    text = selectors.conversation_export_markdown(conversation=conversation)
    return _download(
        text.encode("utf-8"),
        filename=_filename(conversation, "md"),
        content_type="text/markdown; charset=utf-8",
    )


@login_required
@require_GET
@never_cache
def export_all(request: HttpRequest) -> HttpResponse:
    document = selectors.archive_export(user=request.user)
    stamp = timezone.localdate().isoformat()
    return _download(
        transfer.to_json_bytes(document),
        filename=f"team-chat-export-{stamp}.json",
        content_type="application/json; charset=utf-8",
    )


def _import_page(request: HttpRequest, *, error: str = "", status: int = 200) -> HttpResponse:
    limit = settings.CHAT_IMPORT_MAX_BYTES
    return render(
        request,
        "sharing/import.html",
        {"error": error, "max_size": filesizeformat(limit)},
        status=status,
    )


@login_required
@require_GET
def import_page(request: HttpRequest) -> HttpResponse:
    return _import_page(request)


def _upload_bytes(request: HttpRequest) -> bytes:
    limit = settings.CHAT_IMPORT_MAX_BYTES
    too_big = ImportRefused(
        f"This file is larger than {filesizeformat(limit)}, the most this server imports at "
        "once. Nothing was imported."
    )
    # Refuse on the declared size before the upload is parsed (multipart adds a little).
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit + 64 * 1024:
        raise too_big
    upload = request.FILES.get("file")
    if upload is None:
        raise ImportRefused("Choose a JSON export file to import.")
    if upload.size is not None and upload.size > limit:
        raise too_big
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise too_big
    if not data.strip():
        raise ImportRefused("This file is empty. Nothing was imported.")
    return data


@login_required
@require_POST
def import_file(request: HttpRequest) -> HttpResponse:
    try:
        parsed = transfer.parse_import(_upload_bytes(request))
        imported = services.conversations_import(owner=request.user, conversations=parsed)
    except ImportRefused as exc:
        return _import_page(request, error=f"{exc.message} Nothing was imported.", status=400)
    except DatabaseError:
        # Validation should have caught it; the transaction was rolled back either way.
        logger.exception("import failed while storing")
        return _import_page(
            request,
            error="The file could not be stored, so nothing was imported. It may be damaged.",
            status=400,
        )
    if len(imported) == 1:
        return redirect("conversation_detail", conversation_id=imported[0].id)
    flash.success(request, f"Imported {len(imported)} conversations. They are in the sidebar.")
    return redirect("import_page")
