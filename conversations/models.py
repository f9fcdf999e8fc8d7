"""Conversations and their messages.

A conversation is a tree of messages: each message points at the one it follows (``parent``), and
the conversation remembers which leaf is shown (``current_leaf``). Today every message simply
follows the previous one; regenerate, edit and branches extend the tree without rewriting it.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Conversation(models.Model):
    # Random ids: nothing in a URL reveals how many conversations exist.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    model = models.ForeignKey(
        "providers.ChatModel", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    system_prompt = models.TextField(blank=True)
    current_leaf = models.ForeignKey(
        "Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # The sidebar: one user's conversations, newest first.
            models.Index(fields=["owner", "-updated_at", "-created_at"], name="conv_owner_recent"),
        ]

    def __str__(self) -> str:
        return self.title or "New chat"

    @property
    def display_title(self) -> str:
        return self.title or "New chat"


class Message(models.Model):
    class Role(models.TextChoices):
        USER = "user", "User"
        ASSISTANT = "assistant", "Assistant"

    class Status(models.TextChoices):
        STREAMING = "streaming", "Streaming"
        COMPLETE = "complete", "Complete"
        STOPPED = "stopped", "Stopped"
        INTERRUPTED = "interrupted", "Interrupted"
        ERROR = "error", "Error"

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    parent = models.ForeignKey(
        "self", on_delete=models.CASCADE, null=True, blank=True, related_name="children"
    )
    role = models.CharField(max_length=10, choices=Role.choices)
    content = models.TextField(blank=True)
    reasoning = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.COMPLETE)
    finish_reason = models.CharField(max_length=40, blank=True)
    error_kind = models.CharField(max_length=40, blank=True)
    error = models.TextField(blank=True)
    # The model that wrote an assistant reply; the name is kept even if the model is deleted.
    model = models.ForeignKey(
        "providers.ChatModel", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    model_name = models.CharField(max_length=200, blank=True)
    # Estimated size of this message's content, computed once when it is stored.
    token_count = models.PositiveIntegerField(null=True, blank=True)
    # What the provider reported for the call that produced this reply.
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage_estimated = models.BooleanField(default=False)
    # The id the browser gave a message it sent, so a resend is stored once.
    client_id = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["conversation", "id"], name="msg_conversation_order"),
            models.Index(
                fields=["status", "updated_at"],
                name="msg_streaming_sweep",
                condition=Q(status="streaming"),
            ),
        ]
        constraints = [
            # One reply at a time per conversation, enforced where every process can see it.
            models.UniqueConstraint(
                fields=["conversation"],
                condition=Q(status="streaming"),
                name="one_streaming_reply_per_conversation",
            ),
            models.UniqueConstraint(
                fields=["conversation", "client_id"],
                condition=Q(client_id__isnull=False),
                name="unique_client_message_id",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.role}: {self.content[:40]}"

    @property
    def is_finished(self) -> bool:
        return self.status != self.Status.STREAMING
