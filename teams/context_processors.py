"""What the navigation needs on every page: computed only when a template uses it."""

from __future__ import annotations

from django.http import HttpRequest
from django.utils.functional import SimpleLazyObject

from teams import selectors


def navigation(request: HttpRequest) -> dict[str, object]:
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {}
    return {"team_nav": SimpleLazyObject(lambda: selectors.navigation_for(user=user))}
