"""Websocket frames that carry HTML: rendered from the same template partials as the pages.

Sync (template rendering reads no database here, but markdown rendering is CPU work that does not
belong on the event loop); call through database_sync_to_async.
"""

from __future__ import annotations

from django.template.loader import render_to_string

from conversations.models import Conversation, Message

PAGE = "conversations/partials.html"


def message_html(message: Message) -> str:
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
        "role": message.role,
        "status": message.status,
        "html": message_html(message),
    }


def reply_done_frame(reply: Message) -> dict:
    return {
        "type": "reply.done",
        "conversation": str(reply.conversation_id),
        "message": reply.id,
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
