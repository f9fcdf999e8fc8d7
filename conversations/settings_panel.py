"""What the settings panel of a chat shows: the model picker, the system prompt and the fields of
the parameters the chosen model accepts, with the values (saved, or just submitted) and errors.

Sync (reads the database); used by the views, rendered by the ``settings-panel`` partial.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser
from django.urls import reverse

from conversations import selectors
from conversations.forms import ChatSettingsForm
from conversations.history import reply_token_limit
from conversations.models import Conversation
from providers.models import ChatModel
from providers.params import JSON_MODE, PARAMS, ParamSpec
from teams.selectors import model_default_for, models_available, team_for_send


@dataclass(frozen=True)
class ParamField:
    spec: ParamSpec
    value: object
    error: str
    placeholder: str
    maximum: float | None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def input_id(self) -> str:
        return f"settings-{self.spec.name.replace('_', '-')}"

    @property
    def step(self) -> str:
        return "1" if self.spec.kind == "int" else "any"

    @property
    def html_min(self) -> str:
        # A seed's 64-bit bounds would only be rounded by the browser: left to the server.
        minimum = self.spec.minimum
        return "" if minimum is None or self.spec.name == "seed" else f"{minimum:g}"

    @property
    def html_max(self) -> str:
        maximum = self.maximum
        return "" if maximum is None or self.spec.name == "seed" else f"{maximum:g}"


@dataclass
class SettingsPanel:
    action: str
    groups: list[selectors.ModelGroup]
    model: ChatModel | None  # whose parameters are shown
    selected_id: str
    unavailable_model: ChatModel | None  # the conversation's model, when it was turned off
    system_prompt: str
    system_prompt_error: str
    model_error: str
    fields: list[ParamField]
    json_mode: bool
    json_mode_error: str
    reply_limit: int | None = None  # the largest max_tokens the shown model takes
    form_errors: list[str] = field(default_factory=list)
    saved: bool = False
    open: bool = False
    is_new_chat: bool = False

    @property
    def has_errors(self) -> bool:
        return bool(
            self.model_error
            or self.system_prompt_error
            or self.json_mode_error
            or self.form_errors
            or any(f.error for f in self.fields)
        )

    @property
    def changed_count(self) -> int:
        """How many parameters are set, for the summary line."""
        return sum(1 for f in self.fields if f.value not in (None, "")) + int(self.json_mode)


def _error(form: ChatSettingsForm, name: str) -> str:
    errors = form.errors.get(name) if form.is_bound else None
    return " ".join(errors) if errors else ""


def _placeholder(spec: ParamSpec, model: ChatModel) -> str:
    default = (model.default_params or {}).get(spec.name)
    if spec.name == "max_tokens":
        return f"{reply_token_limit(model) if default is None else default}"
    if default is None:
        return "provider's default"
    if isinstance(default, list):
        return " / ".join(str(item) for item in default)
    return str(default)


def build(
    *,
    user: AbstractBaseUser,
    conversation: Conversation | None,
    form: ChatSettingsForm | None = None,
    saved: bool = False,
    open: bool = False,
) -> SettingsPanel | None:
    """The panel for a conversation, or for the new-chat page (conversation None).

    None when no model is available at all (the page says how to add one instead).
    """
    unavailable = None
    # Only the models of the team the chat is charged to are offered (teams/, ModelAccess).
    team = team_for_send(
        user=user, requested=None, current_team_id=conversation.team_id if conversation else None
    )
    available = models_available(team=team)
    if conversation is not None:
        stored_model = conversation.model
        if stored_model is not None and not (
            stored_model.is_available and available.filter(pk=stored_model.pk).exists()
        ):
            unavailable = stored_model
            stored_model = None
        current = stored_model or (None if unavailable else model_default_for(team=team))
        initial = ChatSettingsForm.initial_from(
            model_id=current.pk if current else None,
            system_prompt=conversation.system_prompt,
            params=conversation.params or {},
        )
        action = reverse("conversation_settings", args=[conversation.id])
    else:
        row = selectors.new_chat_settings(user=user)
        current = selectors.chat_model_for_new_chat(user=user, settings_row=row)
        if current is not None and not available.filter(pk=current.pk).exists():
            current = model_default_for(team=team)
        initial = ChatSettingsForm.initial_from(
            model_id=current.pk if current else None,
            system_prompt=row.system_prompt if row else "",
            params=(row.params or {}) if row else {},
        )
        action = reverse("new_chat_settings")
    groups = selectors.chat_model_groups(available)
    if not groups and unavailable is None:
        return None

    if form is None:
        form = ChatSettingsForm(initial=initial)
    shown = current
    if form.is_bound:
        picked = str(form.data.get("model", ""))
        for group in groups:
            for chat_model in group.models:
                if str(chat_model.pk) == picked:
                    shown = chat_model

    def value(name: str) -> object:
        if form.is_bound:
            return form.data.get(name, "")
        return initial.get(name, "")

    fields = []
    if shown is not None:
        accepted = set(shown.accepted_params or ())
        for spec in PARAMS:
            if spec.name != "max_tokens" and spec.name not in accepted:
                continue
            maximum = spec.maximum
            if spec.name == "max_tokens":
                maximum = reply_token_limit(shown)
            fields.append(
                ParamField(
                    spec=spec,
                    value=value(spec.name),
                    error=_error(form, spec.name),
                    placeholder=_placeholder(spec, shown),
                    maximum=maximum,
                )
            )
    json_mode = value(JSON_MODE)
    return SettingsPanel(
        action=action,
        groups=groups,
        model=shown,
        selected_id=str(shown.pk) if shown is not None else "",
        unavailable_model=unavailable,
        system_prompt=str(value("system_prompt") or ""),
        system_prompt_error=_error(form, "system_prompt"),
        model_error=_error(form, "model"),
        fields=fields,
        json_mode=bool(json_mode) and json_mode not in ("", "false", "off"),
        json_mode_error=_error(form, JSON_MODE),
        reply_limit=reply_token_limit(shown) if shown is not None else None,
        form_errors=list(form.non_field_errors()) if form.is_bound else [],
        saved=saved,
        open=open or unavailable is not None,
        is_new_chat=conversation is None,
    )
