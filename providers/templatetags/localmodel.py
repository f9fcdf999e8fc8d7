"""Template helpers for the bundled local model (providers/localmodel/)."""

from __future__ import annotations

from django import template

from providers.localmodel import DESCRIPTION
from providers.localmodel import status as states
from providers.localmodel.selectors import local_model_unwanted_reason
from providers.localmodel.status import LocalModelStatus, status_read
from providers.models import Provider

register = template.Library()


@register.simple_tag
def local_model_status() -> LocalModelStatus | None:
    """What the local model is doing (a small file read), for staff notices."""
    current = status_read()
    if current is not None and current.state == states.READY and local_model_unwanted_reason():
        # A provider was added while it runs: no need to keep suggesting one.
        return None
    return current


@register.simple_tag
def local_model_description() -> str:
    return DESCRIPTION


@register.filter
def is_local_model(model: object) -> bool:
    provider = getattr(model, "provider", None)
    return getattr(provider, "source", None) == Provider.Source.LOCAL
