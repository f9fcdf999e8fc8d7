"""Plain helpers that make test objects. Sync: async tests call them through
database_sync_to_async."""

from __future__ import annotations

from itertools import count

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from conversations.models import Conversation, Message
from providers.models import ChatModel, Provider

_seq = count(1)
PASSWORD = "correct horse battery staple"


def make_user(username: str | None = None, **extra: object) -> AbstractBaseUser:
    username = username or f"user{next(_seq)}"
    return get_user_model().objects.create_user(
        username=username, password=PASSWORD, email=f"{username}@example.com", **extra
    )


def make_chat_model(
    base_url: str,
    *,
    name: str = "fake-model",
    api_key: str = "sk-test-secret-key",
    context_window: int = 8192,
    max_output_tokens: int = 512,
    **provider_fields: object,
) -> ChatModel:
    provider = Provider.objects.create(
        name=f"Fake upstream {next(_seq)}", base_url=base_url, api_key=api_key, **provider_fields
    )
    return ChatModel.objects.create(
        provider=provider,
        name=name,
        context_window=context_window,
        max_output_tokens=max_output_tokens,
        is_default=True,
    )


def make_conversation(
    owner: AbstractBaseUser, *, model: ChatModel | None = None, title: str = "", turns: int = 0
) -> Conversation:
    conversation = Conversation.objects.create(owner=owner, model=model, title=title)
    parent = None
    for index in range(turns):
        parent = Message.objects.create(
            conversation=conversation,
            parent=parent,
            role=Message.Role.USER,
            content=f"question {index}",
            token_count=8,
        )
        parent = Message.objects.create(
            conversation=conversation,
            parent=parent,
            role=Message.Role.ASSISTANT,
            content=f"answer {index}",
            token_count=8,
            model=model,
            model_name=model.label if model else "",
        )
    if parent is not None:
        conversation.current_leaf = parent
        conversation.save(update_fields=["current_leaf"])
    return conversation


def make_team(name: str, *, admins: tuple = (), members: tuple = (), **limits: object):
    from teams.models import Membership, Team

    team = Team.objects.create(name=name, **limits)
    for user in admins:
        Membership.objects.create(team=team, user=user, role=Membership.Role.ADMIN)
    for user in members:
        Membership.objects.create(team=team, user=user, role=Membership.Role.MEMBER)
    return team
