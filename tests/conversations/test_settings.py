"""Per-conversation model, system prompt and parameters: the settings panel, its rules, and what
reaches the provider (read back from the requests the fake upstream recorded)."""

from __future__ import annotations

import html
import uuid

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from conversations import services
from conversations.errors import ChatError
from conversations.history import context_budget
from conversations.models import Conversation, NewChatSettings
from providers.models import ChatModel
from tests.conversations.wsclient import open_socket, receive_until, settle
from tests.factories import make_chat_model, make_conversation, make_user
from tests.fake_upstream import FakeUpstream

db = database_sync_to_async


def settings_url(conversation: Conversation) -> str:
    return f"/c/{conversation.id}/settings/"


def text_of(response) -> str:
    return html.unescape(response.content.decode())


def other_model(chat_model: ChatModel, name: str = "fake-model-large", **fields) -> ChatModel:
    return ChatModel.objects.create(provider=chat_model.provider, name=name, **fields)


@pytest.fixture
def alice():
    return make_user("alice")


@pytest.fixture
def alice_client(alice) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def chat_model(fake_upstream: FakeUpstream) -> ChatModel:
    return make_chat_model(fake_upstream.base_url, max_output_tokens=1000)


# -- the panel ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_picker_lists_enabled_models_only(alice_client, alice, chat_model):
    large = other_model(chat_model, display_name="Large one", accepts_json_mode=True)
    other_model(chat_model, name="retired", display_name="Retired one", enabled=False)
    conversation = make_conversation(alice, model=chat_model, turns=1)
    page = text_of(alice_client.get(f"/c/{conversation.id}/"))
    assert 'id="settings-model"' in page and 'for="settings-model"' in page
    assert f'<option value="{large.pk}">Large one (JSON mode)</option>' in page
    assert f'<option value="{chat_model.pk}" selected>fake-model</option>' in page
    assert "Retired one" not in page
    assert f'<optgroup label="{chat_model.provider.name}">' in page


@pytest.mark.django_db
def test_only_the_parameters_the_model_accepts_are_offered(alice_client, alice, chat_model):
    chat_model.accepted_params = ["temperature"]
    chat_model.default_params = {"temperature": 0.6}
    chat_model.save()
    conversation = make_conversation(alice, model=chat_model)
    panel = text_of(alice_client.get(settings_url(conversation)))
    assert 'for="settings-temperature"' in panel and 'placeholder="0.6"' in panel
    assert 'for="settings-max-tokens"' in panel  # the reply length is always adjustable
    for absent in ("settings-top-p", "settings-top-k", "settings-seed", "settings-json-mode"):
        assert absent not in panel


@pytest.mark.django_db
def test_saving_settings_stores_them_and_new_chats_follow_the_model(
    alice_client, alice, chat_model
):
    large = other_model(chat_model, accepts_json_mode=True)
    conversation = make_conversation(alice, model=chat_model, turns=1)
    before = Conversation.objects.get(pk=conversation.pk).updated_at
    response = alice_client.post(
        settings_url(conversation),
        {
            "model": str(large.pk),
            "system_prompt": "  Answer like a pirate.  ",
            "temperature": "0.3",
            "top_p": "",
            "stop": "END\n\n###\n",
            "seed": "7",
            "json_mode": "on",
        },
        HTTP_HX_REQUEST="true",
    )
    assert response.status_code == 200
    assert 'role="status">Saved.' in text_of(response)
    conversation.refresh_from_db()
    assert conversation.model == large
    assert conversation.system_prompt == "Answer like a pirate."
    assert conversation.params == {
        "temperature": 0.3,
        "stop": ["END", "###"],
        "seed": 7,
        "json_mode": True,
    }
    assert conversation.updated_at == before  # the chat does not jump up the list
    assert NewChatSettings.objects.get(user=alice).model == large
    home = text_of(alice_client.get("/"))
    assert f'<option value="{large.pk}" selected>' in home


@pytest.mark.django_db
def test_bad_values_get_clear_messages_and_nothing_is_saved(alice_client, alice, chat_model):
    chat_model.accepted_params = ["temperature", "top_p", "top_k", "stop"]
    chat_model.save()
    conversation = make_conversation(alice, model=chat_model)
    response = alice_client.post(
        settings_url(conversation),
        {
            "model": str(chat_model.pk),
            "system_prompt": "Be brief.",
            "temperature": "3",
            "top_p": "-0.5",
            "top_k": "abc",
            "max_tokens": "5000",
            "stop": "a\nb\nc\nd\ne",
        },
        HTTP_HX_REQUEST="true",
    )
    page = text_of(response)
    assert "Nothing was saved" in page
    assert "Temperature must be a number from 0 to 2." in page
    assert "Top p must be a number from 0 to 1." in page
    assert "Enter a whole number, or leave it empty" in page
    assert "Stop sequences: at most 4 are allowed; 5 were given." in page
    assert 'aria-invalid="true"' in page
    # What was typed stays in the fields, so nothing is lost.
    assert 'value="3"' in page and "Be brief." in page
    conversation.refresh_from_db()
    assert conversation.params == {} and conversation.system_prompt == ""


@pytest.mark.django_db
def test_max_tokens_cannot_exceed_what_the_model_writes(alice_client, alice, chat_model):
    conversation = make_conversation(alice, model=chat_model)
    response = alice_client.post(
        settings_url(conversation),
        {"model": str(chat_model.pk), "max_tokens": "1001"},
        HTTP_HX_REQUEST="true",
    )
    assert "fake-model writes at most 1,000 tokens per reply." in text_of(response)


@pytest.mark.django_db
def test_a_system_prompt_too_large_for_the_model_is_refused(alice, chat_model):
    chat_model.context_window = 1000
    chat_model.save()
    conversation = make_conversation(alice, model=chat_model)
    with pytest.raises(services.SettingsInvalid) as caught:
        services.conversation_settings_update(
            conversation=conversation,
            model_id=chat_model.pk,
            system_prompt="word " * 2000,
            params={},
        )
    assert "accepts at most" in caught.value.errors["system_prompt"]


@pytest.mark.django_db
def test_switching_models_drops_what_the_new_one_does_not_accept(alice, chat_model):
    chat_model.accepted_params = ["temperature", "top_k"]
    chat_model.save()
    plain = other_model(chat_model, accepted_params=["temperature"])
    conversation = make_conversation(alice, model=chat_model)
    services.conversation_settings_update(
        conversation=conversation,
        model_id=plain.pk,
        system_prompt="",
        params={"temperature": 0.5, "top_k": 20, "json_mode": True},
    )
    assert conversation.params == {"temperature": 0.5}


@pytest.mark.django_db
def test_a_disabled_model_cannot_be_picked(alice_client, alice, chat_model):
    retired = other_model(chat_model, enabled=False)
    conversation = make_conversation(alice, model=chat_model)
    response = alice_client.post(
        settings_url(conversation), {"model": str(retired.pk)}, HTTP_HX_REQUEST="true"
    )
    assert "Pick one of the available models." in text_of(response)
    conversation.refresh_from_db()
    assert conversation.model == chat_model


@pytest.mark.django_db
def test_a_conversation_whose_model_was_disabled_says_so_and_lets_the_user_pick(
    alice_client, alice, chat_model
):
    replacement = other_model(chat_model, display_name="Replacement")
    conversation = make_conversation(alice, model=chat_model, turns=2)
    chat_model.enabled = False
    chat_model.save()

    page = text_of(alice_client.get(f"/c/{conversation.id}/"))
    assert "answer 1" in page  # the history stays readable
    assert (
        "The model of this conversation, <strong>fake-model</strong>, has been turned off" in page
    )
    assert 'role="alert"' in page
    assert '<option value="" disabled selected>fake-model (turned off)</option>' in page
    assert '<details class="settings-details" open>' in page

    with pytest.raises(ChatError) as caught:
        services.message_send(user=alice, conversation_id=conversation.id, content="Still there?")
    assert caught.value.code == "model_unavailable"
    assert "Pick another model in the conversation settings" in caught.value.message

    alice_client.post(
        settings_url(conversation), {"model": str(replacement.pk)}, HTTP_HX_REQUEST="true"
    )
    page = text_of(alice_client.get(f"/c/{conversation.id}/"))
    assert "has been turned off" not in page
    outcome = services.message_send(
        user=alice, conversation_id=conversation.id, content="Still there?"
    )
    assert outcome.plan is not None and outcome.plan.request.model == replacement.name


@pytest.mark.django_db
def test_a_disabled_provider_hides_its_models_too(alice, chat_model):
    conversation = make_conversation(alice, model=chat_model)
    chat_model.provider.enabled = False
    chat_model.provider.save()
    with pytest.raises(ChatError) as caught:
        services.message_send(user=alice, conversation_id=conversation.id, content="Hello")
    assert caught.value.code == "model_unavailable"


@pytest.mark.django_db
def test_someone_elses_settings_are_not_found(alice_client, chat_model):
    bob = make_user("bob")
    conversation = make_conversation(bob, model=chat_model)
    assert alice_client.get(settings_url(conversation)).status_code == 404
    response = alice_client.post(settings_url(conversation), {"model": str(chat_model.pk)})
    assert response.status_code == 404
    assert alice_client.get(f"/c/{uuid.uuid4()}/settings/").status_code == 404


@pytest.mark.django_db
def test_without_htmx_the_form_posts_and_redirects(alice_client, alice, chat_model):
    conversation = make_conversation(alice, model=chat_model)
    response = alice_client.post(
        settings_url(conversation), {"model": str(chat_model.pk), "temperature": "1.5"}
    )
    assert response.status_code == 302 and response["Location"] == f"/c/{conversation.id}/"
    response = alice_client.post(
        settings_url(conversation), {"model": str(chat_model.pk), "temperature": "9"}
    )
    assert response.status_code == 200
    assert "Temperature must be a number from 0 to 2." in text_of(response)


# -- the new-chat page -------------------------------------------------------------------------


@pytest.mark.django_db
def test_new_chat_settings_go_with_the_first_message_then_clear(alice_client, alice, chat_model):
    large = other_model(chat_model)
    response = alice_client.post(
        "/settings/new-chat/",
        {"model": str(large.pk), "system_prompt": "You are terse.", "temperature": "0.1"},
        HTTP_HX_REQUEST="true",
    )
    assert "your next new chat starts with these" in text_of(response)
    home = text_of(alice_client.get("/"))
    assert "You are terse." in home and 'value="0.1"' in home

    outcome = services.message_send(user=alice, conversation_id=None, content="Hi")
    conversation = outcome.conversation
    assert conversation.model == large
    assert conversation.system_prompt == "You are terse."
    assert conversation.params == {"temperature": 0.1}
    assert outcome.plan.request.messages[0] == {"role": "system", "content": "You are terse."}
    assert outcome.plan.request.params["temperature"] == 0.1

    row = NewChatSettings.objects.get(user=alice)
    assert (row.model, row.system_prompt, row.params) == (large, "", {})
    second = services.message_send(user=alice, conversation_id=None, content="Again")
    assert second.conversation.model == large and second.conversation.system_prompt == ""


@pytest.mark.django_db
def test_new_chats_use_the_default_when_the_last_pick_was_disabled(alice, chat_model):
    large = other_model(chat_model)
    NewChatSettings.objects.create(user=alice, model=large)
    large.enabled = False
    large.save()
    outcome = services.message_send(user=alice, conversation_id=None, content="Hi")
    assert outcome.conversation.model == chat_model


# -- what is sent ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_max_tokens_sent_is_the_reserve_of_the_history_budget(alice, chat_model):
    chat_model.context_window = 1000
    chat_model.max_output_tokens = 800
    chat_model.save()
    conversation = make_conversation(alice, model=chat_model)
    outcome = services.message_send(user=alice, conversation_id=conversation.id, content="Hi")
    assert outcome.plan.request.params == {"max_tokens": 500}  # half the window at most
    assert context_budget(chat_model) == (1000 - 500 - 64, 500)

    shorter = make_conversation(alice, model=chat_model)
    shorter.params = {"max_tokens": 120}
    shorter.save()
    outcome = services.message_send(user=alice, conversation_id=shorter.id, content="More")
    assert outcome.plan.request.params == {"max_tokens": 120}
    assert context_budget(chat_model, 120) == (1000 - 120 - 64, 120)


@pytest.mark.django_db
def test_max_completion_tokens_for_models_that_want_it(alice, chat_model):
    chat_model.max_tokens_param = "max_completion_tokens"
    chat_model.save()
    conversation = make_conversation(alice, model=chat_model)
    outcome = services.message_send(user=alice, conversation_id=conversation.id, content="Hi")
    assert outcome.plan.request.params == {"max_completion_tokens": 1000}


async def _exchange(user, content: str, conversation_id: str | None = None) -> None:
    communicator, connected = await open_socket(user)
    assert connected
    await communicator.send_json_to(
        {
            "type": "send",
            "conversation": conversation_id,
            "content": content,
            "client_id": str(uuid.uuid4()),
        }
    )
    frames = await receive_until(communicator, "reply.done")
    await communicator.disconnect()
    await settle()
    assert frames[-1]["status"] == "complete", frames[-1]


@pytest.mark.django_db(transaction=True)
async def test_only_the_parameters_that_were_set_reach_the_provider(fake_upstream, alice):
    def prepare() -> Conversation:
        chat_model = make_chat_model(fake_upstream.base_url, max_output_tokens=400)
        chat_model.accepted_params = ["temperature", "top_p", "stop", "seed"]
        chat_model.accepts_json_mode = True
        chat_model.default_params = {"temperature": 0.9, "top_p": 0.8}
        chat_model.save()
        conversation = make_conversation(alice, model=chat_model)
        services.conversation_settings_update(
            conversation=conversation,
            model_id=chat_model.pk,
            system_prompt="Reply in JSON.",
            params={"temperature": 0.2, "stop": ["END"], "json_mode": True, "max_tokens": 150},
        )
        return conversation

    conversation = await db(prepare)()
    await _exchange(alice, "List three colours", str(conversation.id))

    sent = fake_upstream.requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Reply in JSON."}
    assert {key: value for key, value in sent.items() if key != "messages"} == {
        "model": "fake-model",
        "temperature": 0.2,  # the conversation's, over the model's 0.9
        "top_p": 0.8,  # the model's default, since the conversation set none
        "stop": ["END"],
        "response_format": {"type": "json_object"},
        "max_tokens": 150,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


@pytest.mark.django_db(transaction=True)
async def test_a_conversation_that_set_nothing_sends_no_sampling_parameters(fake_upstream, alice):
    def prepare() -> None:
        make_chat_model(fake_upstream.base_url, max_output_tokens=300)

    await db(prepare)()
    await _exchange(alice, "Hello")
    sent = fake_upstream.requests[-1].json
    assert set(sent) == {"model", "messages", "max_tokens", "stream", "stream_options"}
    assert sent["max_tokens"] == 300


@pytest.mark.django_db(transaction=True)
async def test_a_parameter_the_model_stopped_accepting_is_not_sent(fake_upstream, alice):
    def prepare() -> Conversation:
        chat_model = make_chat_model(fake_upstream.base_url)
        conversation = make_conversation(alice, model=chat_model)
        # Stored while the admin allowed them; the admin has since narrowed the model's list.
        conversation.params = {"top_k": 5, "seed": 3, "temperature": 0.4, "json_mode": True}
        conversation.save()
        chat_model.accepted_params = ["temperature"]
        chat_model.save()
        return conversation

    conversation = await db(prepare)()
    await _exchange(alice, "Hello", str(conversation.id))
    sent = fake_upstream.requests[-1].json
    assert sent["temperature"] == 0.4
    for key in ("top_k", "seed", "response_format", "json_mode"):
        assert key not in sent
