"""Websocket frames that carry HTML: rendered from the same template partials as the pages.

Sync (they read the tree around a message, and markdown rendering is CPU work that does not
belong on the event loop); call through database_sync_to_async.
"""

from __future__ import annotations

from uuid import UUID

from django.template.loader import render_to_string

from conversations import selectors
from conversations.models import Conversation, Message
from conversations.selectors import context_divider

PAGE = "conversations/partials.html"


def message_html(message: Message) -> str:
    if not hasattr(message, "siblings"):
        leaf_id = (
            Conversation.objects.filter(id=message.conversation_id)
            .values_list("current_leaf_id", flat=True)
            .first()
        )
        selectors.annotate_tree([message], leaf_id=leaf_id)
    return render_to_string(f"{PAGE}#message", {"message": message})


def sidebar_item_html(conversation: Conversation) -> str:
    return render_to_string(
        f"{PAGE}#sidebar-item", {"item": conversation, "current_id": conversation.id}
    )


def message_frame(message: Message) -> dict:
    return {
        "type": "message",
        "conversation": str(message.conversation_id),
        "message": message.id,
        "parent": message.parent_id,
        "role": message.role,
        "status": message.status,
        "html": message_html(message),
    }


def reply_done_frame(reply: Message) -> dict:
    return {
        "type": "reply.done",
        "conversation": str(reply.conversation_id),
        "message": reply.id,
        "parent": reply.parent_id,
        "status": reply.status,
        "finish_reason": reply.finish_reason,
        "html": message_html(reply),
    }


def conversation_frame(conversation: Conversation) -> dict:
    return {
        "type": "conversation",
        "conversation": str(conversation.id),
        "title": conversation.display_title,
        "url": f"/c/{conversation.id}/",
        "sidebar_html": sidebar_item_html(conversation),
        # The header with Rename and Delete, so a new chat has them without a reload. Its forms
        # post through htmx, which sends the page's CSRF token from <body hx-headers>.
        "header_html": render_to_string(
            f"{PAGE}#conversation-title", {"conversation": conversation}
        ),
    }


def context_frame(conversation_id: UUID, reply_id: int) -> dict:
    """Where the model's view of the conversation begins for this reply: the page puts the
    divider above message ``before`` (``html`` is empty when the reply was sent everything)."""
    divider = context_divider(reply_id=reply_id)
    html = render_to_string(f"{PAGE}#context-divider", {"divider": divider}) if divider else ""
    return {
        "type": "context",
        "conversation": str(conversation_id),
        "message": reply_id,
        "before": divider.before_id if divider else None,
        "html": html,
    }


def title_frame(conversation: Conversation) -> dict:
    return {
        "type": "title",
        "conversation": str(conversation.id),
        "title": conversation.display_title,
    }


def thread_frame(conversation: Conversation) -> dict:
    """The branch shown, redrawn: after an edit, a regenerate, a continue or a switch."""
    window = selectors.thread_window(conversation=conversation)
    divider = context_divider(reply_id=selectors.latest_reply_id(window.messages))
    return {
        "type": "thread",
        "conversation": str(conversation.id),
        "leaf": window.leaf_id,
        "html": render_to_string(
            f"{PAGE}#thread",
            {"thread": window, "conversation": conversation, "divider": divider},
        ),
    }
