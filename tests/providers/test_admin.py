"""The provider and model admin: write-only API key, headers, presets, Test connection and
Fetch models against the fake upstream on loopback."""

from __future__ import annotations

import html
import logging
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission
from django.test import Client
from django.urls import reverse

from providers.headers import HIDDEN_VALUE
from providers.models import ChatModel, Provider
from providers.presets import PRESETS
from tests.factories import make_user
from tests.fake_upstream import FakeUpstream, Script

pytestmark = pytest.mark.django_db

SECRET = "sk-admin-secret-4f9a7c"
HEADER_SECRET = "hdr-secret-77e1"


@pytest.fixture
def admin_client() -> Client:
    user = make_user("root", is_staff=True, is_superuser=True)
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def provider(fake_upstream: FakeUpstream) -> Provider:
    provider = Provider.objects.create(
        name="Acme AI",
        base_url=fake_upstream.base_url,
        api_key=SECRET,
        extra_headers={"X-Api-Key": HEADER_SECRET, "X-Title": "Team Chat"},
    )
    ChatModel.objects.create(provider=provider, name="fake-model", is_default=True)
    return provider


def change_url(provider: Provider) -> str:
    return reverse("admin:providers_provider_change", args=[provider.pk])


def page_text(response) -> str:
    return html.unescape(response.content.decode())


def form_data(provider: Provider, **changes: object) -> dict[str, object]:
    """What the change form posts when the admin edits nothing but ``changes``."""
    data: dict[str, object] = {
        "name": provider.name,
        "base_url": provider.base_url,
        "new_api_key": "",
        "enabled": "on",
        "extra_headers_text": "",
        "include_usage": "on",
        "max_retries": provider.max_retries,
        "connect_timeout": provider.connect_timeout,
        "first_byte_timeout": provider.first_byte_timeout,
        "idle_timeout": provider.idle_timeout,
        "total_timeout": provider.total_timeout,
        "models-TOTAL_FORMS": "0",
        "models-INITIAL_FORMS": "0",
        "models-MIN_NUM_FORMS": "0",
        "models-MAX_NUM_FORMS": "1000",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def shown_headers(client: Client, provider: Provider) -> str:
    form = client.get(change_url(provider)).context["adminform"].form
    return form.initial["extra_headers_text"]


# -- the API key and headers are write-only ---------------------------------------------------


def test_the_api_key_is_never_rendered_in_any_admin_page(admin_client: Client, provider: Provider):
    chat_model = provider.models.get()
    urls = [
        reverse("admin:index"),
        reverse("admin:app_list", args=["providers"]),
        reverse("admin:providers_provider_changelist"),
        reverse("admin:providers_provider_add"),
        reverse("admin:providers_provider_presets"),
        reverse("admin:providers_provider_add") + "?preset=openai",
        change_url(provider),
        reverse("admin:providers_provider_history", args=[provider.pk]),
        reverse("admin:providers_provider_delete", args=[provider.pk]),
        reverse("admin:providers_chatmodel_changelist"),
        reverse("admin:providers_chatmodel_change", args=[chat_model.pk]),
    ]
    for url in urls:
        response = admin_client.get(url)
        assert response.status_code == 200, url
        text = page_text(response)
        assert SECRET not in text, url
        assert HEADER_SECRET not in text, url
    change_page = page_text(admin_client.get(change_url(provider)))
    assert "A key is stored" in change_page
    assert '"X-Title": "Team Chat"' in change_page  # a plain header is shown as it is
    assert HIDDEN_VALUE in change_page


def test_a_blank_key_and_untouched_headers_keep_what_is_stored(
    admin_client: Client, provider: Provider
):
    headers = shown_headers(admin_client, provider)
    response = admin_client.post(
        change_url(provider), form_data(provider, name="Acme AI 2", extra_headers_text=headers)
    )
    assert response.status_code == 302
    provider.refresh_from_db()
    assert provider.name == "Acme AI 2"
    assert provider.api_key == SECRET
    assert provider.extra_headers == {"X-Api-Key": HEADER_SECRET, "X-Title": "Team Chat"}


def test_a_new_key_replaces_the_stored_one_and_clear_removes_it(
    admin_client: Client, provider: Provider
):
    admin_client.post(change_url(provider), form_data(provider, new_api_key="sk-new-key-123"))
    provider.refresh_from_db()
    assert provider.api_key == "sk-new-key-123"
    assert "sk-new-key-123" not in page_text(admin_client.get(change_url(provider)))

    admin_client.post(change_url(provider), form_data(provider, clear_api_key="on"))
    provider.refresh_from_db()
    assert provider.api_key == ""
    assert "No key is stored" in page_text(admin_client.get(change_url(provider)))


def test_a_new_key_and_clear_together_is_refused(admin_client: Client, provider: Provider):
    response = admin_client.post(
        change_url(provider), form_data(provider, new_api_key="sk-other", clear_api_key="on")
    )
    assert response.status_code == 200
    assert "Either type a new key or remove the stored one, not both." in page_text(response)
    provider.refresh_from_db()
    assert provider.api_key == SECRET


def test_a_form_with_errors_does_not_echo_the_key_that_was_typed(
    admin_client: Client, provider: Provider
):
    typed = "sk-typed-but-form-invalid-9"
    response = admin_client.post(
        change_url(provider),
        form_data(provider, new_api_key=typed, base_url="not a url", connect_timeout="0"),
    )
    assert response.status_code == 200
    text = page_text(response)
    assert "Enter a valid URL." in text
    assert "Ensure this value is greater than or equal to 0.1." in text
    assert typed not in text and SECRET not in text
    provider.refresh_from_db()
    assert provider.api_key == SECRET


@pytest.mark.parametrize(
    ("headers", "words"),
    [
        ("{not json", "Extra headers must be a JSON object"),
        ('["X-Title"]', "Extra headers must be a JSON object"),
        ('{"Bad Name": "x"}', "is not a valid header name"),
        ('{"Host": "evil.example"}', "The header Host is set by this app"),
        ('{"X-Title": "a\\r\\nX-Injected: 1"}', "only printable ASCII"),
        ('{"X-Title": {"nested": 1}}', "must be text"),
        (f'{{"X-New-Token": "{HIDDEN_VALUE}"}}', "Enter a value for the header X-New-Token."),
    ],
)
def test_extra_headers_are_checked(
    admin_client: Client, provider: Provider, headers: str, words: str
):
    response = admin_client.post(
        change_url(provider), form_data(provider, extra_headers_text=headers)
    )
    assert response.status_code == 200
    assert words in page_text(response)
    provider.refresh_from_db()
    assert provider.extra_headers["X-Api-Key"] == HEADER_SECRET


def test_headers_are_sent_with_requests(admin_client: Client, provider: Provider, fake_upstream):
    headers = '{"X-Title": "Team Chat", "X-Api-Key": "' + HIDDEN_VALUE + '", "X-Extra": 7}'
    admin_client.post(change_url(provider), form_data(provider, extra_headers_text=headers))
    admin_client.post(reverse("admin:providers_provider_test", args=[provider.pk]))
    sent = fake_upstream.requests[-1].headers
    assert sent["x-api-key"] == HEADER_SECRET
    assert sent["x-extra"] == "7"
    assert sent["authorization"] == f"Bearer {SECRET}"


def test_staff_who_may_only_view_see_no_key_nor_secret_header(provider: Provider):
    viewer = make_user("viewer", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_provider"))
    client = Client()
    client.force_login(viewer)
    response = client.get(change_url(provider))
    assert response.status_code == 200
    text = page_text(response)
    assert SECRET not in text and HEADER_SECRET not in text
    assert "Stored (never shown)" in text
    assert "X-Title: Team Chat" in text
    # Nor can they fetch models (that writes); testing the connection is allowed.
    assert (
        client.post(reverse("admin:providers_provider_fetch", args=[provider.pk])).status_code
        == 403
    )


def test_an_environment_provider_is_not_edited_here(admin_client: Client, provider: Provider):
    provider.source = Provider.Source.ENVIRONMENT
    provider.save()
    text = page_text(admin_client.get(change_url(provider)))
    assert "Set by OPENAI_API_KEY" in text
    assert 'name="base_url"' not in text and 'name="new_api_key"' not in text
    assert SECRET not in text


def test_the_local_model_provider_is_not_edited_here(admin_client: Client, provider: Provider):
    provider.source = Provider.Source.LOCAL
    provider.save()
    text = page_text(admin_client.get(change_url(provider)))
    assert "Made for each run of the local model" in text
    assert 'name="base_url"' not in text and 'name="new_api_key"' not in text
    assert SECRET not in text


# -- Test connection ---------------------------------------------------------------------------


def messages_of(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_test_connection_reports_success(admin_client: Client, provider: Provider):
    response = admin_client.post(
        reverse("admin:providers_provider_test", args=[provider.pk]), follow=True
    )
    assert messages_of(response) == ["Acme AI: Connected to 127.0.0.1: 2 models available."]


def test_test_connection_reports_the_providers_error_without_the_key(
    admin_client: Client, provider: Provider, fake_upstream: FakeUpstream, caplog
):
    # The fake answers a wrong key by echoing it back, as some providers do.
    fake_upstream.api_key = "the-right-key"
    caplog.set_level(logging.DEBUG)
    response = admin_client.post(
        reverse("admin:providers_provider_test", args=[provider.pk]), follow=True
    )
    [message] = messages_of(response)
    assert message.startswith("Acme AI: The provider rejected the API key (HTTP 401):")
    assert "Incorrect API key provided" in message and "Check the API key." in message
    assert fake_upstream.requests[-1].headers["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in page_text(response)
    assert SECRET not in caplog.text


@pytest.mark.parametrize(
    ("script", "words"),
    [
        (
            Script.error(500, "<html><body><h1>502 Bad Gateway</h1></body></html>"),
            "502 Bad Gateway",
        ),
        (Script.error(503, None), "HTTP 503 with an empty body"),
        (
            Script.error(429, {"error": {"message": "Budget has been exceeded", "type": "budget"}}),
            "budget or quota is used up",
        ),
    ],
)
def test_test_connection_reports_other_errors_in_plain_words(
    admin_client: Client, provider: Provider, fake_upstream: FakeUpstream, script: Script, words
):
    fake_upstream.enqueue(script, route="models")
    response = admin_client.post(
        reverse("admin:providers_provider_test", args=[provider.pk]), follow=True
    )
    [message] = messages_of(response)
    assert words in message
    assert response.context["messages"]._loaded_messages[0].level_tag == "error"


def test_test_connection_of_an_unreachable_provider(admin_client: Client):
    provider = Provider.objects.create(name="Gone", base_url="http://127.0.0.1:9/v1")
    response = admin_client.post(
        reverse("admin:providers_provider_test", args=[provider.pk]), follow=True
    )
    [message] = messages_of(response)
    assert message.startswith("Gone: Could not connect to the provider at 127.0.0.1")


def test_without_a_model_list_the_connection_is_tested_with_a_tiny_chat(
    admin_client: Client, provider: Provider, fake_upstream: FakeUpstream
):
    fake_upstream.enqueue(Script.error(404, {"error": {"message": "Not Found"}}), route="models")
    response = admin_client.post(
        reverse("admin:providers_provider_test", args=[provider.pk]), follow=True
    )
    [message] = messages_of(response)
    assert "the model fake-model answered" in message
    assert "no model list at /models" in message
    chat = fake_upstream.requests[-1]
    assert chat.path == "/v1/chat/completions" and chat.json["max_tokens"] == 1


def test_test_connection_action_on_the_list(admin_client: Client, provider: Provider):
    response = admin_client.post(
        reverse("admin:providers_provider_changelist"),
        {"action": "test_connection", "_selected_action": [provider.pk]},
        follow=True,
    )
    assert messages_of(response) == ["Acme AI: Connected to 127.0.0.1: 2 models available."]


# -- Fetch models ------------------------------------------------------------------------------


def test_the_first_fetch_enables_the_models_later_ones_add_them_disabled(
    admin_client: Client, fake_upstream: FakeUpstream
):
    provider = Provider.objects.create(name="Local", base_url=fake_upstream.base_url)
    url = reverse("admin:providers_provider_fetch", args=[provider.pk])
    response = admin_client.post(url, follow=True)
    assert messages_of(response) == [
        "Local lists 2 models. Added and enabled: fake-model, fake-model-large."
    ]
    assert dict(provider.models.values_list("name", "enabled")) == {
        "fake-model": True,
        "fake-model-large": True,
    }

    fake_upstream.models = ["fake-model", "brand-new"]
    response = admin_client.post(url, follow=True)
    [message] = messages_of(response)
    assert "Added, disabled until you enable them: brand-new." in message
    assert (
        "No longer listed (kept, so their conversations stay usable): fake-model-large" in message
    )
    assert provider.models.get(name="brand-new").enabled is False
    assert provider.models.count() == 3

    response = admin_client.post(url, follow=True)
    assert "All of them were already here." in messages_of(response)[0]


def test_fetched_models_take_the_presets_capabilities(admin_client: Client, fake_upstream):
    provider = Provider.objects.create(name="L", base_url=fake_upstream.base_url, preset="local")
    admin_client.post(reverse("admin:providers_provider_fetch", args=[provider.pk]))
    fetched = provider.models.get(name="fake-model")
    assert fetched.streams_reasoning and fetched.accepts_json_mode
    assert "top_k" in fetched.accepted_params


def test_fetch_models_where_there_is_no_list_says_to_enter_them_by_hand(
    admin_client: Client, provider: Provider, fake_upstream: FakeUpstream
):
    fake_upstream.enqueue(Script.error(404, "Not Found"), route="models")
    response = admin_client.post(
        reverse("admin:providers_provider_fetch", args=[provider.pk]), follow=True
    )
    [message] = messages_of(response)
    assert "has no model list (GET /models was not found)" in message
    assert "add its models by hand in the Models section" in message


def test_fetch_models_action_on_the_list(admin_client: Client, fake_upstream: FakeUpstream):
    first = Provider.objects.create(name="One", base_url=fake_upstream.base_url)
    second = Provider.objects.create(name="Two", base_url=fake_upstream.base_url)
    admin_client.post(
        reverse("admin:providers_provider_changelist"),
        {"action": "fetch_models", "_selected_action": [first.pk, second.pk]},
    )
    assert first.models.count() == 2 and second.models.count() == 2


def test_models_entered_by_hand_in_the_inline(admin_client: Client, provider: Provider):
    data = form_data(
        provider,
        **{
            "models-TOTAL_FORMS": "1",
            "models-0-name": "hand-made",
            "models-0-display_name": "Hand made",
            "models-0-enabled": "on",
            "models-0-context_window": "4096",
            "models-0-max_output_tokens": "512",
        },
    )
    response = admin_client.post(change_url(provider), data)
    assert response.status_code == 302
    made = provider.models.get(name="hand-made")
    assert (made.label, made.context_window, made.enabled) == ("Hand made", 4096, True)


# -- presets -----------------------------------------------------------------------------------


def test_the_preset_page_offers_every_preset(admin_client: Client):
    text = page_text(admin_client.get(reverse("admin:providers_provider_presets")))
    for preset in PRESETS.values():
        assert preset.name in text
        assert f"?preset={preset.key}" in text
    assert "Add from preset" in page_text(
        admin_client.get(reverse("admin:providers_provider_changelist"))
    )


def test_a_preset_fills_the_add_form(admin_client: Client):
    response = admin_client.get(reverse("admin:providers_provider_add") + "?preset=asi1-mini")
    form = response.context["adminform"].form
    assert form.initial["name"] == "ASI-1 Mini"
    assert form.initial["base_url"] == "https://api.asi1.ai/v1"
    assert form.initial["from_preset"] == "asi1-mini"
    text = page_text(response)
    assert 'value="https://api.asi1.ai/v1"' in text
    assert "Preset: ASI-1 Mini" in text and "asi1-mini" in text


def test_local_preset_has_longer_first_byte_timeout(admin_client: Client):
    response = admin_client.get(reverse("admin:providers_provider_add") + "?preset=local")
    form = response.context["adminform"].form
    assert form.initial["first_byte_timeout"] == 180.0
    assert "use <strong>Fetch models</strong>" in page_text(response)


def test_saving_a_preset_creates_its_models_with_their_flags(
    admin_client: Client, fake_upstream: FakeUpstream
):
    preset = PRESETS["asi1-mini"]
    data = form_data(
        Provider(**{**preset.provider_fields(), "base_url": fake_upstream.base_url}),
        from_preset="asi1-mini",
        new_api_key="sk-asi-key",
    )
    response = admin_client.post(reverse("admin:providers_provider_add"), data, follow=True)
    assert response.status_code == 200
    provider = Provider.objects.get(name="ASI-1 Mini")
    assert provider.preset == "asi1-mini"
    assert provider.base_url == fake_upstream.base_url  # the admin's override wins
    assert provider.api_key == "sk-asi-key"
    model = provider.models.get()
    assert model.name == "asi1-mini" and model.enabled and model.is_default
    assert model.streams_reasoning and not model.accepts_tools
    assert model.accepted_params == ["temperature"]
    assert "Added the preset's models: asi1-mini." in messages_of(response)


def test_openai_preset_models_carry_prices(admin_client: Client, fake_upstream: FakeUpstream):
    preset = PRESETS["openai"]
    data = form_data(
        Provider(**{**preset.provider_fields(), "base_url": fake_upstream.base_url}),
        from_preset="openai",
    )
    admin_client.post(reverse("admin:providers_provider_add"), data)
    model = ChatModel.objects.get(name="gpt-4o-mini")
    assert model.input_price_per_mtok == Decimal("0.15")
    assert model.output_price_per_mtok == Decimal("0.60")
    assert model.accepts_json_mode and model.accepts_tools


# -- models ------------------------------------------------------------------------------------


def model_form_data(chat_model: ChatModel, **changes: object) -> dict[str, object]:
    data: dict[str, object] = {
        "provider": chat_model.provider_id,
        "name": chat_model.name,
        "display_name": chat_model.display_name,
        "enabled": "on",
        "context_window": chat_model.context_window,
        "max_output_tokens": chat_model.max_output_tokens,
        "max_tokens_param": "max_tokens",
        "input_price_per_mtok": "",
        "output_price_per_mtok": "",
        "accepted_params": ["temperature", "top_p"],
        "default_params": "{}",
    }
    data.update(changes)
    return data


def test_a_model_is_edited_with_prices_defaults_and_capabilities(
    admin_client: Client, provider: Provider
):
    chat_model = provider.models.get()
    response = admin_client.post(
        reverse("admin:providers_chatmodel_change", args=[chat_model.pk]),
        model_form_data(
            chat_model,
            display_name="Fake",
            input_price_per_mtok="0.25",
            output_price_per_mtok="1.5",
            default_params='{"temperature": 0.4, "min_p": 0.05}',
            accepts_json_mode="on",
            streams_reasoning="on",
        ),
    )
    assert response.status_code == 302
    chat_model.refresh_from_db()
    assert chat_model.label == "Fake"
    assert chat_model.input_price_per_mtok == Decimal("0.25")
    assert chat_model.output_price_per_mtok == Decimal("1.5")
    assert chat_model.default_params == {"temperature": 0.4, "min_p": 0.05}
    assert chat_model.accepted_params == ["temperature", "top_p"]
    assert chat_model.accepts_json_mode and chat_model.streams_reasoning
    assert not chat_model.accepts_tools


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"default_params": '{"temperature": 5}'}, "Temperature must be a number from 0 to 2."),
        ({"default_params": '{"top_k": 40}'}, "top_k has a default but is not among the accepted"),
        ({"default_params": '{"json_mode": true}'}, "JSON mode is on by default but not accepted."),
        ({"default_params": '{"stream": false}'}, "stream is set by this app"),
        ({"default_params": '{"max_tokens": 99999}'}, "more than the model's max output tokens"),
        ({"default_params": "[1]"}, "must be a JSON object"),
        ({"input_price_per_mtok": "-1"}, "greater than or equal to 0"),
    ],
)
def test_model_defaults_are_checked(
    admin_client: Client, provider: Provider, changes: dict, words: str
):
    chat_model = provider.models.get()
    response = admin_client.post(
        reverse("admin:providers_chatmodel_change", args=[chat_model.pk]),
        model_form_data(chat_model, **changes),
    )
    assert response.status_code == 200
    assert words in page_text(response)


def test_there_is_one_default_model(admin_client: Client, provider: Provider):
    other = ChatModel.objects.create(provider=provider, name="other")
    admin_client.post(
        reverse("admin:providers_chatmodel_change", args=[other.pk]),
        model_form_data(other, is_default="on"),
    )
    assert list(ChatModel.objects.filter(is_default=True)) == [other]


def test_disable_and_enable_models_from_the_list(admin_client: Client, provider: Provider):
    chat_model = provider.models.get()
    changelist = reverse("admin:providers_chatmodel_changelist")
    admin_client.post(changelist, {"action": "disable", "_selected_action": [chat_model.pk]})
    chat_model.refresh_from_db()
    assert chat_model.enabled is False
    admin_client.post(changelist, {"action": "enable", "_selected_action": [chat_model.pk]})
    chat_model.refresh_from_db()
    assert chat_model.enabled is True


def test_disabling_a_provider_takes_its_models_out_of_the_pickers(
    admin_client: Client, provider: Provider
):
    from conversations.selectors import chat_models_enabled

    changelist = reverse("admin:providers_provider_changelist")
    admin_client.post(changelist, {"action": "disable", "_selected_action": [provider.pk]})
    provider.refresh_from_db()
    assert provider.enabled is False
    assert not chat_models_enabled().exists()
    admin_client.post(changelist, {"action": "enable", "_selected_action": [provider.pk]})
    assert chat_models_enabled().count() == 1
