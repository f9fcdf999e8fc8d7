"""A user who is deactivated (or deleted) loses access at once.

Sessions already stop authenticating an inactive user on their next request; what is open
right now is closed here: their websockets, and the replies running for them, in every process.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from teams.services import user_access_revoke

User = get_user_model()


@receiver(post_save, sender=User, dispatch_uid="teams.user_deactivated")
def _user_saved(sender: type, instance: Any, created: bool, **kwargs: Any) -> None:
    if not created and not instance.is_active:
        # After commit: a rolled-back deactivation must not close anything.
        transaction.on_commit(partial(user_access_revoke, user_id=instance.pk))


@receiver(post_delete, sender=User, dispatch_uid="teams.user_deleted")
def _user_deleted(sender: type, instance: Any, **kwargs: Any) -> None:
    transaction.on_commit(partial(user_access_revoke, user_id=instance.pk))
