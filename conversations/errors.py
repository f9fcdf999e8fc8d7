"""Errors the user is meant to read. Their text is shown as it is, in the conversation."""

from __future__ import annotations


class ChatError(Exception):
    """A request was refused; ``code`` is stable for clients, the message is for people."""

    def __init__(self, message: str, *, code: str = "refused") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ConversationNotFound(ChatError):
    # The same answer whether the conversation does not exist or belongs to someone else.
    def __init__(self) -> None:
        super().__init__("This conversation does not exist.", code="not_found")


class MessageNotFound(ChatError):
    def __init__(self) -> None:
        super().__init__("This message does not exist.", code="not_found")
