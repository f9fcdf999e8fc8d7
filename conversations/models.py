"""Conversations and their messages.

A conversation is a tree of messages: each message points at the one it follows (``parent``), and
the conversation remembers which leaf is shown (``current_leaf``). Regenerating a reply adds a
sibling reply under the same user message; editing a user message adds a sibling user message
under the same parent; continuing a reply cut off by the length limit adds an assistant child
under the cut reply. Nothing is rewritten or deleted: branches are switched by moving
``current_leaf``.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from providers.models import ContextStrategy


class Conversation(models.Model):
    class TitleSource(models.TextChoices):
        # The first words of the first message: replaced by a generated title when one arrives.
        WORDS = "words", "First words"
        MODEL = "model", "Written by the model"
        USER = "user", "Set by the user"

    # Random ids: nothing in a URL reveals how many conversations exist.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="conversations"
    )
    title = models.CharField(max_length=200, blank=True)
    title_source = models.CharField(
        max_length=8, choices=TitleSource.choices, default=TitleSource.WORDS
    )
    # What the call that wrote the title cost (see conversations/usage.py); None until one ran.
    title_prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    title_completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    title_usage_estimated = models.BooleanField(default=False)
    pinned = models.BooleanField(default=False)
    # Archived conversations leave the sidebar; the Archive page and search still find them.
    archived = models.BooleanField(default=False)
    model = models.ForeignKey(
        "providers.ChatModel", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    system_prompt = models.TextField(blank=True)
    # Sampling parameters the user set (providers.params); only these are sent, over the
    # model's defaults.
    params = models.JSONField(default=dict, blank=True)
    # Blank: the model's choice, else settings.CHAT_CONTEXT_STRATEGY (conversations/history.py).
    context_strategy = models.CharField(
        max_length=10, choices=ContextStrategy.choices, blank=True, default=""
    )
    # The team this conversation's usage is charged to (None: the owner is in no team).
    team = models.ForeignKey(
        "teams.Team", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    current_leaf = models.ForeignKey(
        "Message", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            # The sidebar (pinned first, then newest) and the Archive page, for one user.
            models.Index(
                fields=["owner", "archived", "-pinned", "-updated_at", "-created_at"],
                name="conv_owner_sidebar",
            ),
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
    # How many messages precede this one on its branch (0 for the first): the history service
    # counts what was left out without walking the whole branch. Set by save() from the parent.
    depth = models.PositiveIntegerField(default=0)
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

    def save(self, *args, **kwargs) -> None:
        # Only a first message can be at depth 0, so a new message with a parent and depth 0
        # has not been given one: every way of creating a message gets it right.
        if self._state.adding and self.parent_id is not None and self.depth == 0:
            parent_depth = (
                Message.objects.filter(id=self.parent_id).values_list("depth", flat=True).first()
            )
            self.depth = (parent_depth or 0) + 1
        super().save(*args, **kwargs)

    @property
    def is_finished(self) -> bool:
        return self.status != self.Status.STREAMING


class Summary(models.Model):
    """A model-written summary of the start of a branch, sent in place of the messages it covers.

    It covers the messages from ``first_message`` (the branch's first) to ``last_message``, in
    branch order. A later summary extends an earlier one (``previous``): the old summary plus the
    messages after it, never everything again. Summaries are never changed once stored.
    """

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="summaries"
    )
    previous = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    first_message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    last_message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    # Messages covered: every message on the branch up to and including last_message.
    message_count = models.PositiveIntegerField()
    content = models.TextField()
    token_count = models.PositiveIntegerField()
    model = models.ForeignKey(
        "providers.ChatModel", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    model_name = models.CharField(max_length=200, blank=True)
    # The call that wrote it, as the provider reported it (estimated when it did not).
    prompt_tokens = models.PositiveIntegerField(null=True, blank=True)
    completion_tokens = models.PositiveIntegerField(null=True, blank=True)
    usage_estimated = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["conversation", "-id"], name="summary_conversation")]

    def __str__(self) -> str:
        return f"Summary of {self.message_count} messages"


class ReplyContext(models.Model):
    """What the model was sent for one reply: where its view of the conversation began, and
    the summary that stood in for what came before. The page's divider reads it."""

    reply = models.OneToOneField(
        Message, on_delete=models.CASCADE, primary_key=True, related_name="sent_context"
    )
    strategy = models.CharField(max_length=10, choices=ContextStrategy.choices)
    # The first stored message sent (the newest user message when no earlier one was).
    first_sent = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="+")
    summary = models.ForeignKey(
        Summary, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Messages before first_sent on the branch, and how many of those the summary covers.
    earlier_count = models.PositiveIntegerField(default=0)
    summarized_count = models.PositiveIntegerField(default=0)
    # Told to the user on the reply (e.g. summarizing failed and older messages were left out).
    note = models.TextField(blank=True)
    estimated_prompt_tokens = models.PositiveIntegerField(default=0)
    budget = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"Context of reply {self.reply_id}"

    @property
    def not_sent_count(self) -> int:
        return self.earlier_count - self.summarized_count


class TokenCalibration(models.Model):
    """How a model's provider counts prompts compared with our estimate, learned from usage.

    Both sums decay with each report, so the ratio follows recent requests and weighs large
    prompts (the ones near the limit) more than small ones. Kept apart from ChatModel so that
    saving a model in the admin never overwrites what was learned.
    """

    chat_model = models.OneToOneField(
        "providers.ChatModel", on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    estimated = models.FloatField(default=0)
    reported = models.FloatField(default=0)
    samples = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"Token calibration of model {self.chat_model_id}"


class NewChatSettings(models.Model):
    """What a user's next new chat starts with.

    ``model`` is the model the user picked last (in any conversation), so new chats follow it.
    The system prompt and parameters are what the user set on the new-chat page before the
    first message; that first message hands them to the conversation it creates and clears them.
    """

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="new_chat_settings",
    )
    model = models.ForeignKey(
        "providers.ChatModel", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    system_prompt = models.TextField(blank=True)
    params = models.JSONField(default=dict, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "new chat settings"

    def __str__(self) -> str:
        return f"New chat settings of {self.user}"
