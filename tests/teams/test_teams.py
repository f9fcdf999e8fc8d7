"""Teams: the team admin's pages, the team a conversation is charged to, and which models a
team may use (enforced where a model is chosen and where a message is sent)."""

from __future__ import annotations

import pytest
from django.test import Client

from conversations import services
from conversations.errors import ChatError
from conversations.models import Conversation, Message
from teams.models import Membership, ModelAccess, ProviderAccess, Team
from tests.factories import make_chat_model, make_conversation, make_team, make_user

pytestmark = pytest.mark.django_db


def client_for(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def team_setup():
    ann = make_user("ann")  # team admin
    bob = make_user("bob")  # member
    carol = make_user("carol")  # not in the team yet
    team = make_team("Research", admins=(ann,), members=(bob,))
    return ann, bob, carol, team


def _messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def test_a_team_admin_adds_members_by_username_or_email_and_sets_roles(team_setup):
    ann, _bob, carol, team = team_setup
    dave = make_user("dave")
    client = client_for(ann)
    url = f"/teams/{team.pk}/"

    response = client.post(f"{url}members/add/", {"who": "CAROL", "role": "member"}, follow=True)
    assert "carol was added to the team." in _messages(response)
    response = client.post(
        f"{url}members/add/", {"who": "dave@example.com", "role": "admin"}, follow=True
    )
    assert "dave was added to the team." in _messages(response)
    assert Membership.objects.get(team=team, user=dave).role == "admin"

    response = client.post(f"{url}members/add/", {"who": "nobody", "role": "member"}, follow=True)
    assert any("Nobody with the username" in m for m in _messages(response))
    response = client.post(f"{url}members/add/", {"who": "bob", "role": "member"}, follow=True)
    assert "bob is already a member of Research." in _messages(response)

    carols = Membership.objects.get(team=team, user=carol)
    response = client.post(f"{url}members/{carols.pk}/role/", {"role": "admin"}, follow=True)
    assert "carol is now team admin." in _messages(response)
    page = response.content.decode()
    assert "carol" in page and "dave@example.com" in page


def test_a_team_admin_removes_members_but_not_the_last_admin(team_setup):
    ann, bob, _, team = team_setup
    client = client_for(ann)
    bobs = Membership.objects.get(team=team, user=bob)
    anns = Membership.objects.get(team=team, user=ann)

    response = client.post(f"/teams/{team.pk}/members/{anns.pk}/remove/", follow=True)
    assert any("at least one team admin" in m for m in _messages(response))
    response = client.post(
        f"/teams/{team.pk}/members/{anns.pk}/role/", {"role": "member"}, follow=True
    )
    assert any("at least one team admin" in m for m in _messages(response))
    assert Membership.objects.get(pk=anns.pk).role == "admin"

    response = client.post(f"/teams/{team.pk}/members/{bobs.pk}/remove/", follow=True)
    assert "bob was removed from the team." in _messages(response)
    assert not Membership.objects.filter(pk=bobs.pk).exists()


def test_team_admins_set_team_and_member_limits_on_their_page(team_setup):
    ann, bob, _, team = team_setup
    client = client_for(ann)
    client.post(
        f"/teams/{team.pk}/limits/",
        {"tokens_per_day": "50000", "cost_per_month": "25.50", "requests_per_minute": ""},
    )
    team.refresh_from_db()
    assert (team.tokens_per_day, str(team.cost_per_month), team.requests_per_minute) == (
        50000,
        "25.50",
        None,
    )
    bobs = Membership.objects.get(team=team, user=bob)
    client.post(
        f"/teams/{team.pk}/members/{bobs.pk}/limits/",
        {f"m{bobs.pk}-requests_per_minute": "5", f"m{bobs.pk}-tokens_per_month": "1000"},
    )
    bobs.refresh_from_db()
    assert (bobs.requests_per_minute, bobs.tokens_per_month) == (5, 1000)
    response = client.post(f"/teams/{team.pk}/limits/", {"tokens_per_day": "-3"}, follow=True)
    assert any("0 or more" in m for m in _messages(response))


def test_members_and_outsiders_cannot_manage_a_team(team_setup):
    _ann, bob, carol, team = team_setup
    bobs = Membership.objects.get(team=team, user=bob)
    for user in (bob, carol):
        client = client_for(user)
        assert client.get(f"/teams/{team.pk}/").status_code == 404
        assert client.post(f"/teams/{team.pk}/members/add/", {"who": "carol"}).status_code == 404
        assert client.post(f"/teams/{team.pk}/members/{bobs.pk}/remove/").status_code == 404
        assert client.post(f"/teams/{team.pk}/limits/", {"tokens_per_day": "1"}).status_code == 404
    assert Membership.objects.filter(team=team).count() == 2
    # Their team list shows their role, without a Manage link.
    page = client_for(bob).get("/teams/").content.decode()
    assert "Research" in page and "Manage" not in page


def test_staff_create_teams_and_manage_any_team(team_setup):
    _, _, _, team = team_setup
    staff = client_for(make_user("root", is_staff=True))
    response = staff.post("/teams/new/", {"name": "  Sales  "}, follow=True)
    assert Team.objects.filter(name="Sales").exists()
    assert response.status_code == 200
    assert staff.get(f"/teams/{team.pk}/").status_code == 200
    assert client_for(make_user("eve")).post("/teams/new/", {"name": "X"}).status_code == 404


@pytest.fixture
def chat_model():
    return make_chat_model("http://127.0.0.1:9/v1")


def test_a_conversation_is_charged_to_the_team_the_user_picks_default_their_first(chat_model):
    zoe = make_user("zoe")
    first = make_team("First", members=(zoe,))
    second = make_team("Second", members=(zoe,))

    default = services.message_send(user=zoe, conversation_id=None, content="hi")
    assert default.conversation.team == first
    assert default.plan.usage.team_id == first.pk
    services.reply_finish(reply_id=default.reply.id, content="x", reasoning="", status="complete")

    picked = services.message_send(
        user=zoe, conversation_id=default.conversation.id, content="again", team=str(second.pk)
    )
    assert Conversation.objects.get(pk=default.conversation.id).team == second
    assert picked.plan.usage.team_name == "Second"

    page = client_for(zoe).get(f"/c/{default.conversation.id}/").content.decode()
    assert 'id="team-select"' in page
    assert f'<option value="{second.pk}" selected>Second</option>' in page


def test_a_team_that_is_not_yours_cannot_be_charged(chat_model):
    zoe = make_user("zoe")
    other = make_team("Other")
    with pytest.raises(ChatError) as caught:
        services.message_send(user=zoe, conversation_id=None, content="hi", team=other.pk)
    assert caught.value.code == "team_not_found"
    assert not Message.objects.exists()


def test_a_removed_member_is_charged_to_their_remaining_team(chat_model):
    zoe = make_user("zoe")
    first = make_team("First", members=(zoe,))
    make_team("Second", members=(zoe,))
    outcome = services.message_send(user=zoe, conversation_id=None, content="hi")
    services.reply_finish(reply_id=outcome.reply.id, content="x", reasoning="", status="complete")
    Membership.objects.filter(team=first, user=zoe).delete()
    again = services.message_send(user=zoe, conversation_id=outcome.conversation.id, content="2")
    assert again.plan.usage.team_name == "Second"


def test_models_restricted_to_some_teams_are_offered_and_served_only_to_them():
    open_model = make_chat_model("http://127.0.0.1:9/v1", name="open-model")
    open_model.is_default = False
    open_model.save()
    premium = make_chat_model("http://127.0.0.1:9/v1", name="premium-model")  # the default
    insiders_user, outsiders_user = make_user("ivy"), make_user("oli")
    insiders = make_team("Insiders", members=(insiders_user,))
    make_team("Outsiders", members=(outsiders_user,))
    access = ModelAccess.objects.create(chat_model=premium)
    access.teams.add(insiders)

    # The picker's default (shown on the page) and the send agree, per team.
    assert "premium-model" in client_for(insiders_user).get("/").content.decode()
    assert "premium-model" not in client_for(outsiders_user).get("/").content.decode()
    inside = services.message_send(user=insiders_user, conversation_id=None, content="hi")
    outside = services.message_send(user=outsiders_user, conversation_id=None, content="hi")
    assert inside.plan.request.model == "premium-model"
    assert outside.plan.request.model == "open-model"

    # A conversation on the premium model cannot be continued from a team without access.
    conversation = make_conversation(outsiders_user, model=premium)
    with pytest.raises(ChatError) as caught:
        services.message_send(user=outsiders_user, conversation_id=conversation.id, content="hi")
    assert caught.value.code == "model_unavailable"
    assert "premium-model" in caught.value.message and "Outsiders" in caught.value.message
    assert not Message.objects.filter(conversation=conversation).exists()


def test_a_provider_restricted_to_other_teams_leaves_a_clear_message():
    model = make_chat_model("http://127.0.0.1:9/v1")
    access = ProviderAccess.objects.create(provider=model.provider)
    access.teams.add(make_team("Insiders"))
    loner = make_user("loner")
    with pytest.raises(ChatError) as caught:
        services.message_send(user=loner, conversation_id=None, content="hi")
    assert caught.value.code == "no_model"
    assert "people outside a team" in caught.value.message
    assert not Conversation.objects.exists()


def test_the_model_picker_offers_and_accepts_only_the_teams_models():
    open_model = make_chat_model("http://127.0.0.1:9/v1", name="open-model")
    premium = make_chat_model("http://127.0.0.1:9/v1", name="premium-model")
    outsider = make_user("oli")
    make_team("Outsiders", members=(outsider,))
    insiders = make_team("Insiders")
    ModelAccess.objects.create(chat_model=premium).teams.add(insiders)
    client = client_for(outsider)

    page = client.get("/").content.decode()
    assert "open-model" in page and "premium-model" not in page
    response = client.post("/settings/new-chat/", {"model": str(premium.pk), "system_prompt": ""})
    assert "Pick one of the available models." in response.content.decode()
    conversation = make_conversation(outsider, model=open_model)
    client.post(f"/c/{conversation.id}/settings/", {"model": str(premium.pk), "system_prompt": ""})
    conversation.refresh_from_db()
    assert conversation.model == open_model
