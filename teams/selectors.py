"""Reads about teams: memberships, the team a conversation is charged to, who may manage what,
and which models a team may use. Sync; call through database_sync_to_async from async code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Exists, OuterRef, Q, QuerySet

from conversations.errors import ChatError
from providers.models import ChatModel
from teams.models import Membership, ModelAccess, ProviderAccess, Team


class TeamNotFound(ChatError):
    # The same answer whether the team does not exist or the user may not manage it.
    def __init__(self) -> None:
        super().__init__("This team does not exist.", code="team_not_found")


def memberships_of(*, user: Any) -> list[Membership]:
    """The user's memberships, first joined first (the first is their default team)."""
    if not user.is_authenticated:
        return []
    return list(
        Membership.objects.filter(user=user).select_related("team").order_by("created_at", "id")
    )


def team_default_for(*, user: Any) -> Team | None:
    membership = (
        Membership.objects.filter(user=user).select_related("team").order_by("created_at", "id")
    ).first()
    return membership.team if membership else None


def team_for_send(*, user: Any, requested: object, current_team_id: int | None) -> Team | None:
    """The team a send is charged to: the one the user picked (it must be one of theirs), else
    the conversation's (while they are still in it), else their first team, else none."""
    if requested not in (None, ""):
        try:
            team_id = int(requested)  # type: ignore[call-overload]
        except (TypeError, ValueError):
            raise TeamNotFound from None
        membership = Membership.objects.filter(user=user, team_id=team_id).select_related("team")
        found = membership.first()
        if found is None:
            raise TeamNotFound
        return found.team
    if current_team_id is not None:
        found = (
            Membership.objects.filter(user=user, team_id=current_team_id)
            .select_related("team")
            .first()
        )
        if found is not None:
            return found.team
    return team_default_for(user=user)


def teams_managed_by(*, user: Any) -> QuerySet[Team]:
    """Teams whose members and usage the user may manage: all for staff, else those they admin."""
    if not user.is_authenticated or not user.is_active:
        return Team.objects.none()
    if user.is_staff:
        return Team.objects.all()
    return Team.objects.filter(
        memberships__user=user, memberships__role=Membership.Role.ADMIN
    ).distinct()


def team_get_for_admin(*, user: Any, team_id: object) -> Team:
    """The team if the user may manage it, else TeamNotFound (also for a missing id)."""
    try:
        return teams_managed_by(user=user).get(pk=int(team_id))  # type: ignore[call-overload]
    except (Team.DoesNotExist, TypeError, ValueError):
        raise TeamNotFound from None


def members_of(*, team: Team) -> list[Membership]:
    return list(
        Membership.objects.filter(team=team).select_related("user").order_by("user__username")
    )


@dataclass(frozen=True)
class Navigation:
    memberships: list[Membership]
    manages_teams: bool
    can_see_usage: bool


def navigation_for(*, user: Any) -> Navigation:
    memberships = memberships_of(user=user)
    manages = user.is_staff or any(m.is_admin for m in memberships)
    return Navigation(memberships=memberships, manages_teams=manages, can_see_usage=manages)


# --- which models a team may use -------------------------------------------------------------


def models_available(*, team: Team | None) -> QuerySet[ChatModel]:
    """Enabled models the team may use: those of unrestricted providers and models, and those
    restricted to a list of teams that includes this one. A user in no team gets only
    unrestricted ones."""
    restricted_provider = ProviderAccess.objects.filter(provider=OuterRef("provider"))
    restricted_model = ModelAccess.objects.filter(chat_model=OuterRef("pk"))
    provider_ok = ~Exists(restricted_provider)
    model_ok = ~Exists(restricted_model)
    if team is not None:
        provider_ok = provider_ok | Exists(restricted_provider.filter(teams=team))
        model_ok = model_ok | Exists(restricted_model.filter(teams=team))
    return (
        ChatModel.objects.filter(Q(enabled=True, provider__enabled=True))
        .filter(provider_ok)
        .filter(model_ok)
        .select_related("provider")
    )


def model_default_for(*, team: Team | None) -> ChatModel | None:
    return models_available(team=team).order_by("-is_default", "provider__name", "name").first()


def model_is_available(*, model: ChatModel, team: Team | None) -> bool:
    return models_available(team=team).filter(pk=model.pk).exists()


@dataclass(frozen=True)
class TeamPicker:
    """The chat composer's "charged to" choice: shown when the user is in several teams."""

    memberships: list[Membership]
    selected_id: int | None


def team_picker(*, user: Any, current_team_id: int | None) -> TeamPicker:
    memberships = memberships_of(user=user)
    ids = [m.team_id for m in memberships]
    selected = current_team_id if current_team_id in ids else (ids[0] if ids else None)
    return TeamPicker(memberships=memberships, selected_id=selected)
