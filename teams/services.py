"""Every write about teams: creating them, adding and removing members, roles, limits, and
taking access away from a deactivated user. Sync; views and the admin call these."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from asgiref.sync import async_to_sync
from django.contrib.auth import get_user_model
from django.db import IntegrityError, transaction
from django.db.models import Q

from conversations.errors import ChatError
from teams.models import Limits, Membership, Team

logger = logging.getLogger(__name__)


class TeamError(ChatError):
    pass


def team_create(*, name: str) -> Team:
    name = " ".join(name.split())[:100]
    if not name:
        raise TeamError("A team needs a name.", code="team_name")
    try:
        with transaction.atomic():
            return Team.objects.create(name=name)
    except IntegrityError:
        raise TeamError(f"A team named “{name}” already exists.", code="team_name") from None


def _find_user(identifier: str) -> Any:
    """An existing, active user by username, or by e-mail address when exactly one has it."""
    User = get_user_model()
    identifier = identifier.strip()
    if not identifier:
        raise TeamError("Type the username or e-mail address of the person to add.", code="who")
    found = list(
        User.objects.filter(
            Q(username__iexact=identifier) | Q(email__iexact=identifier), is_active=True
        )[:2]
    )
    exact = [user for user in found if user.get_username().lower() == identifier.lower()]
    if exact:
        return exact[0]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise TeamError(
            f"Several people use the e-mail address {identifier}; add them by username.",
            code="who",
        )
    raise TeamError(
        f"Nobody with the username or e-mail address “{identifier}” has an account here. "
        "Ask a site admin to create it, then add them.",
        code="who",
    )


def membership_add(
    *, team: Team, identifier: str, role: str = Membership.Role.MEMBER
) -> Membership:
    if role not in Membership.Role.values:
        raise TeamError("Unknown role.", code="role")
    user = _find_user(identifier)
    try:
        with transaction.atomic():
            return Membership.objects.create(team=team, user=user, role=role)
    except IntegrityError:
        raise TeamError(
            f"{user.get_username()} is already a member of {team.name}.", code="already_member"
        ) from None


def _admins_left_without(membership: Membership) -> int:
    return (
        Membership.objects.filter(team_id=membership.team_id, role=Membership.Role.ADMIN)
        .exclude(pk=membership.pk)
        .count()
    )


def membership_set_role(*, membership: Membership, role: str) -> Membership:
    if role not in Membership.Role.values:
        raise TeamError("Unknown role.", code="role")
    with transaction.atomic():
        # Locked so that two admins demoting each other at once cannot leave the team adminless.
        Team.objects.select_for_update().get(pk=membership.team_id)
        if (
            membership.role == Membership.Role.ADMIN
            and role != Membership.Role.ADMIN
            and _admins_left_without(membership) == 0
        ):
            raise TeamError(
                "A team needs at least one team admin: make someone else admin first.",
                code="last_admin",
            )
        membership.role = role
        membership.save(update_fields=["role"])
    return membership


def membership_remove(*, membership: Membership) -> None:
    """Remove a member. Their conversations stay theirs; new messages are charged to another
    of their teams (or none)."""
    with transaction.atomic():
        Team.objects.select_for_update().get(pk=membership.team_id)
        if membership.role == Membership.Role.ADMIN and _admins_left_without(membership) == 0:
            raise TeamError(
                "A team needs at least one team admin: make someone else admin first.",
                code="last_admin",
            )
        membership.delete()


def limits_update(*, owner: Limits, values: Mapping[str, object]) -> Limits:
    """Set the limits of a team, a membership or a user (None clears one)."""
    fields = [name for name in Limits.LIMIT_FIELDS if name in values]
    for name in fields:
        setattr(owner, name, values[name])
    owner.save(update_fields=fields)
    return owner


def user_access_revoke(*, user_id: int) -> None:
    """Close the user's websockets and stop their running replies, in every process.

    This process's replies are stopped directly; the channel-layer group ``user.<id>`` reaches
    the user's sockets here and, with channels-redis, the sockets and replies of every other
    process. Sync; failures are logged, never raised (the deactivation itself has happened).
    """
    from channels.layers import get_channel_layer

    from conversations.generation import hub, user_group

    async def notify() -> None:
        hub.stop_user(user_id)
        layer = get_channel_layer()
        if layer is not None:
            await layer.group_send(user_group(user_id), {"type": "user.revoked", "user": user_id})

    try:
        async_to_sync(notify)()
    except Exception:
        logger.exception("could not close the connections of user %s", user_id)
