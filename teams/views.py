"""Team pages for team admins and staff (no Django-admin access needed): members, roles,
limits, and a link to the team's usage. Adapters: authorize through teams.selectors, call one
service, redirect (POST/redirect/GET) with a message saying what happened."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from conversations.errors import ChatError
from teams import selectors, services
from teams.forms import AddMemberForm, LimitsForm, RoleForm, TeamForm
from teams.models import Limits, Membership, Team
from usage.selectors import team_usage_this_month


def _managed(request: HttpRequest, team_id: int) -> Team:
    try:
        return selectors.team_get_for_admin(user=request.user, team_id=team_id)
    except selectors.TeamNotFound:
        raise Http404("This team does not exist.") from None


def _member(team: Team, membership_id: int) -> Membership:
    try:
        return Membership.objects.select_related("user").get(pk=membership_id, team=team)
    except Membership.DoesNotExist:
        raise Http404("This member does not exist.") from None


def _limits_form(owner: Limits, prefix: str | None = None) -> LimitsForm:
    return LimitsForm(initial=owner.limit_values(), prefix=prefix)


@login_required
@require_GET
def team_list(request: HttpRequest) -> HttpResponse:
    managed = set(selectors.teams_managed_by(user=request.user).values_list("id", flat=True))
    memberships = selectors.memberships_of(user=request.user)
    other_teams = []
    if request.user.is_staff:
        mine = {m.team_id for m in memberships}
        other_teams = list(Team.objects.exclude(id__in=mine).order_by("name"))
    return render(
        request,
        "teams/team_list.html",
        {
            "section": "teams",
            "memberships": memberships,
            "other_teams": other_teams,
            "managed": managed,
            "team_form": TeamForm() if request.user.is_staff else None,
        },
    )


@login_required
@require_POST
def team_create(request: HttpRequest) -> HttpResponse:
    if not request.user.is_staff:
        raise Http404
    form = TeamForm(request.POST)
    if form.is_valid():
        try:
            team = services.team_create(name=form.cleaned_data["name"])
        except ChatError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, f"Team “{team.name}” created.")
            return redirect("team_detail", team_id=team.pk)
    else:
        messages.error(request, "A team needs a name.")
    return redirect("team_list")


@login_required
@require_GET
def team_detail(request: HttpRequest, team_id: int) -> HttpResponse:
    team = _managed(request, team_id)
    members = selectors.members_of(team=team)
    usage = team_usage_this_month(team=team)
    rows = [
        {
            "membership": membership,
            "usage": usage.get(membership.user_id),
            "limits_form": _limits_form(membership, prefix=f"m{membership.pk}"),
            "role_form": RoleForm(initial={"role": membership.role}),
        }
        for membership in members
    ]
    return render(
        request,
        "teams/team_detail.html",
        {
            "section": "teams",
            "team": team,
            "rows": rows,
            "add_form": AddMemberForm(),
            "limits_form": _limits_form(team),
            "team_defaults": _defaults_text(),
        },
    )


def _defaults_text() -> str:
    fields = LimitsForm.base_fields
    return ", ".join(
        f"{fields[name].label}: {value or 'none'}"
        for name, value in settings.USAGE_DEFAULT_TEAM_LIMITS.items()
    )


def _done(request: HttpRequest, team: Team, error: ChatError | None, success: str) -> HttpResponse:
    if error is not None:
        messages.error(request, error.message)
    else:
        messages.success(request, success)
    return redirect("team_detail", team_id=team.pk)


@login_required
@require_POST
def member_add(request: HttpRequest, team_id: int) -> HttpResponse:
    team = _managed(request, team_id)
    form = AddMemberForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Type the username or e-mail address of the person to add.")
        return redirect("team_detail", team_id=team.pk)
    try:
        membership = services.membership_add(
            team=team, identifier=form.cleaned_data["who"], role=form.cleaned_data["role"]
        )
    except ChatError as exc:
        return _done(request, team, exc, "")
    return _done(request, team, None, f"{membership.user.get_username()} was added to the team.")


@login_required
@require_POST
def member_role(request: HttpRequest, team_id: int, membership_id: int) -> HttpResponse:
    team = _managed(request, team_id)
    membership = _member(team, membership_id)
    form = RoleForm(request.POST)
    if not form.is_valid():
        return _done(request, team, ChatError("Unknown role."), "")
    try:
        services.membership_set_role(membership=membership, role=form.cleaned_data["role"])
    except ChatError as exc:
        return _done(request, team, exc, "")
    name = membership.user.get_username()
    return _done(request, team, None, f"{name} is now {membership.get_role_display().lower()}.")


@login_required
@require_POST
def member_remove(request: HttpRequest, team_id: int, membership_id: int) -> HttpResponse:
    team = _managed(request, team_id)
    membership = _member(team, membership_id)
    try:
        services.membership_remove(membership=membership)
    except ChatError as exc:
        return _done(request, team, exc, "")
    return _done(
        request, team, None, f"{membership.user.get_username()} was removed from the team."
    )


@login_required
@require_POST
def member_limits(request: HttpRequest, team_id: int, membership_id: int) -> HttpResponse:
    team = _managed(request, team_id)
    membership = _member(team, membership_id)
    form = LimitsForm(request.POST, prefix=f"m{membership.pk}")
    if not form.is_valid():
        return _done(request, team, ChatError("Limits must be whole numbers, 0 or more."), "")
    services.limits_update(owner=membership, values=form.cleaned_data)
    return _done(
        request, team, None, f"Limits of {membership.user.get_username()} in this team saved."
    )


@login_required
@require_POST
def team_limits(request: HttpRequest, team_id: int) -> HttpResponse:
    team = _managed(request, team_id)
    form = LimitsForm(request.POST)
    if not form.is_valid():
        return _done(request, team, ChatError("Limits must be numbers, 0 or more."), "")
    services.limits_update(owner=team, values=form.cleaned_data)
    return _done(request, team, None, "Team limits saved.")
