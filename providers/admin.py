"""The admin pages for providers and their models.

An admin adds a provider by hand or from a preset (providers.presets), tests the connection,
fetches its models, and sets each model's limits, prices, default parameters and capabilities.
The API key is write-only (providers.forms); nothing here renders it, including for staff who
may only view.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.decorators import method_decorator
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_POST

from providers import services
from providers.errors import ProviderRequestError
from providers.forms import ChatModelForm, ProviderForm
from providers.headers import headers_for_display
from providers.models import ChatModel, Provider
from providers.presets import PRESETS, get_preset

_TIMEOUTS = ("connect_timeout", "first_byte_timeout", "idle_timeout", "total_timeout")
_SENSITIVE = sensitive_post_parameters("new_api_key", "extra_headers_text")


def _managed_by_the_app(provider: Provider | None) -> bool:
    # Their name, address and key are rewritten at every start: by setup_instance from OPENAI_*,
    # or by the local model's supervisor (a new port and key each run).
    return provider is not None and provider.source in (
        Provider.Source.ENVIRONMENT,
        Provider.Source.LOCAL,
    )


class ChatModelInline(admin.TabularInline):
    # The plain model form: ChatModelForm's extra fields are not shown here and would be
    # saved empty.
    model = ChatModel
    fields = (
        "name",
        "display_name",
        "enabled",
        "is_default",
        "context_window",
        "max_output_tokens",
    )
    extra = 0
    show_change_link = True
    verbose_name_plural = "Models (fetched from the provider, or entered by hand)"


@admin.register(Provider)
class ProviderAdmin(admin.ModelAdmin):
    form = ProviderForm
    inlines = [ChatModelInline]
    list_display = ("name", "base_url", "enabled", "model_count", "key_status", "source")
    list_filter = ("enabled", "source")
    search_fields = ("name", "base_url")
    actions = ["test_connection", "fetch_models", "enable", "disable"]
    change_form_template = "admin/providers/provider/change_form.html"

    # -- fields ------------------------------------------------------------------------------

    def get_fieldsets(self, request: HttpRequest, obj: Provider | None = None) -> list:
        can_edit = obj is None or self.has_change_permission(request, obj)
        if can_edit and not _managed_by_the_app(obj):
            connection = ["name", "base_url", "new_api_key", "clear_api_key", "enabled"]
            headers = ["extra_headers_text"]
        else:
            # Read-only views show what is stored about the key and headers, never the values.
            connection = ["name", "base_url", "key_status", "enabled"]
            headers = ["extra_headers_text"] if can_edit else ["headers_display"]
        if obj is None:
            connection.append("from_preset")
        return [
            (None, {"fields": connection}),
            (
                "Requests",
                {"fields": [*headers, "include_usage", "max_retries"]},
            ),
            (
                "Timeouts (seconds)",
                {
                    "fields": list(_TIMEOUTS),
                    "description": "Each applies per request; retries happen only before the "
                    "first token.",
                },
            ),
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Provider | None = None) -> list[str]:
        fields = ["key_status", "headers_display"]
        if _managed_by_the_app(obj):
            fields += ["name", "base_url"]
        return fields

    @admin.display(description="API key")
    def key_status(self, obj: Provider) -> str:
        if obj.source == Provider.Source.ENVIRONMENT:
            return "Set by OPENAI_API_KEY" if obj.api_key else "Not set (OPENAI_API_KEY is empty)"
        if obj.source == Provider.Source.LOCAL:
            return "Made for each run of the local model (never shown)"
        return "Stored (never shown)" if obj.api_key else "None"

    @admin.display(description="Extra headers")
    def headers_display(self, obj: Provider) -> str:
        shown = headers_for_display(obj.extra_headers)
        return ", ".join(f"{name}: {value}" for name, value in shown.items()) or "None"

    @admin.display(description="Models (enabled / all)")
    def model_count(self, obj: Provider) -> str:
        models = list(obj.models.all())
        return f"{sum(m.enabled for m in models)} / {len(models)}"

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "base_url":
            kwargs["assume_scheme"] = "https"  # what Django 6 will assume; silences its warning
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Provider]:
        return super().get_queryset(request).prefetch_related("models")

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        initial = super().get_changeform_initial_data(request)
        preset = get_preset(request.GET.get("preset"))
        if preset is not None:
            initial.update(preset.provider_fields())
            initial["from_preset"] = preset.key
        return initial

    # -- saving ------------------------------------------------------------------------------

    @method_decorator(_SENSITIVE)
    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        key = (
            request.POST.get("from_preset")
            if request.method == "POST"
            else request.GET.get("preset")
        )
        if object_id is None and (preset := get_preset(key)) is not None:
            extra_context["preset"] = preset
        return super().changeform_view(request, object_id, form_url, extra_context)

    def save_model(self, request: HttpRequest, obj: Provider, form: ProviderForm, change: bool):
        super().save_model(request, obj, form, change)
        preset = get_preset(form.cleaned_data.get("from_preset")) if not change else None
        if preset is not None:
            created = services.provider_add_preset_models(provider=obj, preset=preset)
            if created:
                names = ", ".join(model.name for model in created)
                self.message_user(request, f"Added the preset's models: {names}.")
            elif not preset.models:
                self.message_user(
                    request,
                    "This preset has no fixed models: use Fetch models to list the server's.",
                )

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        saved = formset.save(commit=False)
        preset = get_preset(form.instance.preset)
        for chat_model in saved:
            if chat_model.pk is None and preset is not None:
                # A model entered by hand takes the preset's capabilities, like a fetched one.
                template = next((m for m in preset.models if m.name == chat_model.name), None)
                for field, value in (template or preset.fetched).model_fields().items():
                    if field not in ("display_name", "context_window", "max_output_tokens"):
                        setattr(chat_model, field, value)
            chat_model.save()
        for chat_model in formset.deleted_objects:
            chat_model.delete()
        formset.save_m2m()
        for chat_model in saved:
            if chat_model.is_default:
                services.chat_model_make_default(chat_model=chat_model)

    # -- test connection and fetch models ----------------------------------------------------

    def _test(self, request: HttpRequest, provider: Provider) -> None:
        try:
            message = services.provider_test_connection(provider=provider)
        except ProviderRequestError as exc:
            self.message_user(request, f"{provider.name}: {exc.message}", messages.ERROR)
        else:
            self.message_user(request, f"{provider.name}: {message}", messages.SUCCESS)

    def _fetch(self, request: HttpRequest, provider: Provider) -> None:
        try:
            result = services.provider_fetch_models(provider=provider)
        except ProviderRequestError as exc:
            self.message_user(
                request, f"{provider.name}: could not fetch models. {exc.message}", messages.ERROR
            )
        else:
            level = messages.SUCCESS if result.listed else messages.WARNING
            self.message_user(request, result.describe(provider), level)

    @admin.action(description="Test connection", permissions=["view"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset:
            self._test(request, provider)

    @admin.action(description="Fetch models", permissions=["change"])
    def fetch_models(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        for provider in queryset:
            self._fetch(request, provider)

    @admin.action(description="Enable selected providers", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        count = services.providers_set_enabled(
            provider_ids=queryset.values_list("pk", flat=True), enabled=True
        )
        self.message_user(request, f"Enabled {count} provider(s).")

    @admin.action(
        description="Disable selected providers (their models leave the pickers)",
        permissions=["change"],
    )
    def disable(self, request: HttpRequest, queryset: QuerySet[Provider]) -> None:
        count = services.providers_set_enabled(
            provider_ids=queryset.values_list("pk", flat=True), enabled=False
        )
        self.message_user(request, f"Disabled {count} provider(s); conversations stay readable.")

    def get_urls(self) -> list:
        view = self.admin_site.admin_view
        return [
            path("add-from-preset/", view(self.presets_view), name="providers_provider_presets"),
            path(
                "<int:object_id>/test-connection/",
                view(self.test_connection_view),
                name="providers_provider_test",
            ),
            path(
                "<int:object_id>/fetch-models/",
                view(self.fetch_models_view),
                name="providers_provider_fetch",
            ),
            *super().get_urls(),
        ]

    def presets_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Add a provider from a preset",
            "presets": PRESETS.values(),
            "add_url": reverse("admin:providers_provider_add"),
        }
        return TemplateResponse(request, "admin/providers/provider/presets.html", context)

    def _provider_for(self, request: HttpRequest, object_id: int, permission: str) -> Provider:
        provider = Provider.objects.filter(pk=object_id).first()
        if provider is None:
            raise Http404("No such provider.")
        allowed = (
            self.has_change_permission(request, provider)
            if permission == "change"
            else self.has_view_permission(request, provider)
        )
        if not allowed:
            raise PermissionDenied
        return provider

    def _back(self, provider: Provider) -> HttpResponseRedirect:
        return HttpResponseRedirect(reverse("admin:providers_provider_change", args=[provider.pk]))

    @method_decorator(require_POST)
    def test_connection_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        provider = self._provider_for(request, object_id, "view")
        self._test(request, provider)
        return self._back(provider)

    @method_decorator(require_POST)
    def fetch_models_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        provider = self._provider_for(request, object_id, "change")
        self._fetch(request, provider)
        return self._back(provider)


@admin.register(ChatModel)
class ChatModelAdmin(admin.ModelAdmin):
    form = ChatModelForm
    list_display = (
        "name",
        "display_name",
        "provider",
        "enabled",
        "is_default",
        "context_window",
        "max_output_tokens",
        "input_price_per_mtok",
        "output_price_per_mtok",
        "capability_list",
    )
    list_filter = ("enabled", "provider", "streams_reasoning", "accepts_tools", "accepts_json_mode")
    list_editable = ("enabled",)
    search_fields = ("name", "display_name", "provider__name")
    list_select_related = ("provider",)
    actions = ["enable", "disable", "make_default"]
    fieldsets = [
        (None, {"fields": ["provider", "name", "display_name", "enabled", "is_default"]}),
        (
            "Limits and prices",
            {
                "fields": [
                    "context_window",
                    "max_output_tokens",
                    "max_tokens_param",
                    "input_price_per_mtok",
                    "output_price_per_mtok",
                ]
            },
        ),
        (
            "Parameters and capabilities",
            {
                "fields": [
                    "accepted_params",
                    "default_params",
                    "streams_reasoning",
                    "accepts_tools",
                    "accepts_json_mode",
                ]
            },
        ),
        ("Long conversations", {"fields": ["context_strategy", "use_for_summaries"]}),
    ]

    @admin.display(description="Capabilities")
    def capability_list(self, obj: ChatModel) -> str:
        return ", ".join(obj.capabilities) or "-"

    def save_model(self, request: HttpRequest, obj: ChatModel, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if obj.is_default:
            services.chat_model_make_default(chat_model=obj)

    @admin.action(description="Enable selected models", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[ChatModel]) -> None:
        count = services.chat_models_set_enabled(
            model_ids=queryset.values_list("pk", flat=True), enabled=True
        )
        self.message_user(request, f"Enabled {count} model(s); users can pick them now.")

    @admin.action(description="Disable selected models", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[ChatModel]) -> None:
        count = services.chat_models_set_enabled(
            model_ids=queryset.values_list("pk", flat=True), enabled=False
        )
        self.message_user(
            request,
            f"Disabled {count} model(s). They leave the pickers; their conversations stay "
            "readable and can switch to another model.",
        )

    @admin.action(description="Make the default for new chats", permissions=["change"])
    def make_default(self, request: HttpRequest, queryset: QuerySet[ChatModel]) -> None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one model.", messages.ERROR)
            return
        chat_model = queryset.get()
        services.chat_model_make_default(chat_model=chat_model)
        self.message_user(request, f"{chat_model.label} is now the default for new chats.")
