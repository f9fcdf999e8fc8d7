"""Helpers for the sharing tests: an HTML walker and a conversation with every kind of field."""

from __future__ import annotations

from html.parser import HTMLParser

from django.contrib.auth.models import AbstractBaseUser
from django.test import Client

from conversations.models import Conversation, Message
from providers.models import ChatModel


class Elements(HTMLParser):
    """Every start tag with its attributes, and the text, of an HTML document."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    @classmethod
    def of(cls, html: str) -> Elements:
        parser = cls()
        parser.feed(html)
        parser.close()
        return parser

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [
            found
            for name, found in self.tags
            if name == tag and all(found.get(k) == v for k, v in attrs.items())
        ]


def signed_in(user: AbstractBaseUser) -> Client:
    client = Client()
    client.force_login(user)
    return client


def add_turn(
    conversation: Conversation,
    question: str,
    answer: str,
    *,
    reasoning: str = "",
    model: ChatModel | None = None,
    **reply_fields: object,
) -> tuple[Message, Message]:
    """A question and its reply after the current leaf; the reply becomes the leaf."""
    user_message = Message.objects.create(
        conversation=conversation,
        parent_id=conversation.current_leaf_id,
        role=Message.Role.USER,
        content=question,
        token_count=10,
    )
    reply = Message.objects.create(
        conversation=conversation,
        parent=user_message,
        role=Message.Role.ASSISTANT,
        content=answer,
        reasoning=reasoning,
        model=model,
        model_name=model.label if model else "",
        token_count=12,
        **reply_fields,
    )
    conversation.current_leaf = reply
    conversation.save(update_fields=["current_leaf"])
    return user_message, reply


def share_form(**overrides: object) -> dict[str, object]:
    return {"visibility": "link", "expires_on": "", **overrides}
