"""Read-only links to a snapshot of a conversation.

A share belongs to a conversation (deleting the conversation deletes, and so revokes, its share)
and is reached only through its token. Revoking deletes the row: there is nothing left that a
stale process or cache could still answer with.
"""

from __future__ import annotations

from datetime import datetime

from django.db import models
from django.utils import timezone


class Share(models.Model):
    class Visibility(models.TextChoices):
        LINK = "link", "Anyone with the link"
        MEMBERS = "members", "Only signed-in members"

    # One link per conversation: "Update share" keeps it, "Revoke and create a new link" replaces
    # its token. The conversation's owner is the share's owner.
    conversation = models.OneToOneField(
        "conversations.Conversation", on_delete=models.CASCADE, related_name="share"
    )
    # Shown to the owner (they need the link again), so kept as it is ...
    token = models.CharField(max_length=64, unique=True)
    # ... but looked up by its digest: the index lookup's timing says nothing about the token.
    token_digest = models.CharField(max_length=64, unique=True)
    visibility = models.CharField(
        max_length=10, choices=Visibility.choices, default=Visibility.LINK
    )
    include_system_prompt = models.BooleanField(default=False)
    # The snapshot: ids of the messages on the branch shown when the owner shared or updated it.
    message_ids = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True, blank=True)
    views = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"Share of {self.conversation_id}"

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())
