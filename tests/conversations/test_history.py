"""Context management end to end: the websocket, the generation task and the history service
against the fake upstream, judged by the requests the fake recorded."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest
from channels.db import database_sync_to_async

from conversations.history import SUMMARY_HEADING
from conversations.models import Conversation, Message, ReplyContext, Summary, TokenCalibration
from conversations.summaries import INSTRUCTIONS
from conversations.tokens import count_tokens, message_tokens
from providers.models import ChatModel
from tests.conversations.wsclient import open_socket, receive_until, settle
from tests.factories import make_chat_model, make_user
from tests.fake_upstream import Script

pytestmark = pytest.mark.django_db(transaction=True)

db = database_sync_to_async

WINDOW = 1000
MAX_OUTPUT = 200
BUDGET = WINDOW - MAX_OUTPUT - 64  # CHAT_CONTEXT_SAFETY_MARGIN
SYSTEM_PROMPT = "You are a terse assistant for the Team Chat tests."
WORDS = [
    "alpha",
    "beta",
    "gamma",
    "delta",
    "kernel",
    "socket",
    "window",
    "budget",
    "summary",
    "history",
    "token",
    "model",
]


def counted(body: dict) -> int:
    """A request's size counted with the same tokenizer the app uses."""
    return sum(count_tokens(m["content"]) + 4 for m in body["messages"])


def is_summary_call(body: dict) -> bool:
    return body["messages"][0]["content"].startswith(INSTRUCTIONS[:60])


def words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choices(WORDS, k=rng.randint(low, high)))


def usage_of(body: dict, completion: str, factor: float = 1.0) -> dict:
    prompt = round(counted(body) * factor)
    done = count_tokens(completion)
    return {"prompt_tokens": prompt, "completion_tokens": done, "total_tokens": prompt + done}


class Upstream:
    """Answers like a provider whose count matches ours: summary calls with a summary no longer
    than asked for, other calls with a reply of varied length."""

    def __init__(
        self,
        rng: random.Random,
        *,
        fail_summaries: bool = False,
        factor: float = 1.0,
        reply_words: tuple[int, int] = (3, 60),
    ) -> None:
        self.rng = rng
        self.reply_words = reply_words
        self.fail_summaries = fail_summaries
        self.factor = factor
        self.summaries: list[str] = []
        self.log: list[tuple[str, dict]] = []  # ("summary" | "reply", body), in arrival order

    def __call__(self, body: dict) -> Script:
        if is_summary_call(body):
            self.log.append(("summary", body))
            if self.fail_summaries:
                return Script.error(500, {"error": {"message": "summarizer is down"}})
            limit = body["max_tokens"]
            text = f"Summary {len(self.summaries) + 1}: " + words(self.rng, limit // 4, limit // 2)
            self.summaries.append(text)
            return Script.stream([text], usage=usage_of(body, text, self.factor))
        self.log.append(("reply", body))
        text = words(self.rng, *self.reply_words)
        return Script.stream(text.split(" "), usage=usage_of(body, text, self.factor))


def _stored_history(owner, model, turns: int, rng: random.Random, **fields) -> Conversation:
    conversation = Conversation.objects.create(
        owner=owner, model=model, system_prompt=SYSTEM_PROMPT, **fields
    )
    parent = None
    for _ in range(turns):
        for role in ("user", "assistant"):
            text = words(rng, 10, 60)
            parent = Message.objects.create(
                conversation=conversation,
                parent=parent,
                role=role,
                content=text,
                token_count=message_tokens(text),
            )
    conversation.current_leaf = parent
    conversation.save(update_fields=["current_leaf"])
    return conversation


@pytest.fixture(autouse=True)
def _no_rate_limit(settings):
    # These tests send hundreds of messages as fast as the fake answers: more than the site's
    # default requests per minute (usage.limits), which is not what they test.
    settings.USAGE_DEFAULT_USER_LIMITS = {"requests_per_minute": 0}


@pytest.fixture
async def alice():
    return await db(make_user)("alice")


@pytest.fixture
def small_model(fake_upstream):
    """Sync factory of models served by the fake (no retries: a failure is final at once)."""

    def make(*, name: str = "fake-model", context_window: int = WINDOW, **fields) -> ChatModel:
        model = make_chat_model(
            fake_upstream.base_url,
            name=name,
            context_window=context_window,
            max_output_tokens=MAX_OUTPUT,
            max_retries=0,
        )
        if fields:
            ChatModel.objects.filter(pk=model.pk).update(**fields)
            model.refresh_from_db()
        return model

    return make


async def _send(communicator, content: str, conversation: str | None) -> list[dict]:
    await communicator.send_json_to(
        {
            "type": "send",
            "conversation": conversation,
            "content": content,
            "client_id": str(uuid.uuid4()),
        }
    )
    return await receive_until(communicator, "reply.done", timeout=30)


def _messages(conversation_id) -> list[tuple[int, str, str]]:
    return list(
        Message.objects.filter(conversation_id=conversation_id)
        .order_by("id")
        .values_list("id", "role", "content")
    )


async def test_two_hundred_turns_always_fit_and_summaries_are_extended_not_rewritten(
    alice, small_model, fake_upstream
):
    model = await db(small_model)()
    rng = random.Random(1000)
    conversation = await db(_stored_history)(alice, model, 0, rng)
    conversation_id = str(conversation.id)
    upstream = Upstream(rng)
    fake_upstream.responder = upstream
    communicator, _ = await open_socket(alice)

    sent: list[str] = []
    frames: list[dict] = []
    for turn in range(200):
        # Mostly short messages, now and then a long one.
        text = f"Q{turn}: " + words(rng, 1, 300 if turn % 17 == 5 else 60)
        sent.append(text)
        got = await _send(communicator, text, conversation_id)
        assert got[-1]["status"] == "complete", got[-1]
        frames += got
    await communicator.disconnect()
    await settle()

    replies = 0
    summaries_so_far = 0
    for kind, body in upstream.log:
        if kind == "summary":
            # Each call fits the summarizer's window too, with room for the summary it writes.
            assert counted(body) <= WINDOW - body["max_tokens"] - 64
            summaries_so_far += 1
            continue
        # Every request fits the budget, counted with the same tokenizer...
        assert counted(body) <= BUDGET, (replies, counted(body))
        # ...and holds the system prompt, the newest message and, once one exists, the summary.
        system = body["messages"][0]
        assert system["role"] == "system" and system["content"].startswith(SYSTEM_PROMPT)
        assert body["messages"][-1] == {"role": "user", "content": sent[replies]}
        if summaries_so_far:
            assert SUMMARY_HEADING in system["content"]
            assert upstream.summaries[summaries_so_far - 1] in system["content"]
        # What follows the system prompt starts with a whole turn.
        assert body["messages"][1]["role"] == "user"
        replies += 1
    assert replies == 200

    calls = [body for kind, body in upstream.log if kind == "summary"]
    assert calls, "200 turns in a 1,000-token window must need a summary"
    transcripts = [body["messages"][1]["content"] for body in calls]
    # Extended, never rewritten: each call carries the summary so far and only newer messages,
    # so no message is given to the summarizer twice.
    assert transcripts[0].startswith("Messages:")
    for number, transcript in enumerate(transcripts[1:], start=1):
        assert transcript.startswith(f"Summary so far:\n\n{upstream.summaries[number - 1]}")
    stored = await db(_messages)(conversation_id)
    for _, role, content in stored:
        if role == "user":
            assert sum(t.count(f"User: {content}") for t in transcripts) <= 1

    summaries = await db(lambda: list(Summary.objects.filter(conversation_id=conversation_id)))()
    assert len(summaries) == len(calls)
    covered = max(summaries, key=lambda s: s.message_count)
    summarized_tokens = sum(
        count_tokens(content) + 4 for _, _, content in stored[: covered.message_count]
    )
    # Summary calls grow with the history left out: each folds in a good share of the window
    # (here at least 150 tokens on average), however many turns that is.
    print(f"{len(calls)} summary calls for {summarized_tokens} tokens summarized in 200 turns")
    assert len(calls) <= summarized_tokens / 150 + 1, (len(calls), summarized_tokens)

    # The user saw the work, and where the model's view begins.
    kinds = [f["type"] for f in frames]
    assert kinds.count("context") == 200
    assert 0 < kinds.count("reply.status") <= len(calls)
    contexts = [f["html"] for f in frames if f["type"] == "context"]
    assert "earlier messages are summarized" in contexts[-1]

    # Nothing stored was changed or deleted: every message is there as it was sent.
    assert len(stored) == 400
    assert [content for _, role, content in stored if role == "user"] == sent


async def test_summary_calls_follow_the_tokens_left_out_not_the_number_of_turns(
    alice, small_model, fake_upstream
):
    """Two conversations with the same amount of history in 40 long or 160 short turns need
    about the same number of summary calls."""
    # A roomier window than elsewhere, so that one turn is small beside what a call folds in.
    model = await db(small_model)(context_window=4000)

    async def run(turns: int, low: int, high: int) -> tuple[int, int]:
        rng = random.Random(turns)
        upstream = Upstream(rng, reply_words=(low, high))
        fake_upstream.responder = upstream
        conversation = await db(_stored_history)(alice, model, 0, rng)
        conversation_id = str(conversation.id)
        communicator, _ = await open_socket(alice)
        for turn in range(turns):
            await _send(communicator, f"Q{turn}: " + words(rng, low, high), conversation_id)
        await communicator.disconnect()
        await settle()
        stored = await db(_messages)(conversation_id)
        return sum(1 for kind, _ in upstream.log if kind == "summary"), sum(
            count_tokens(c) + 4 for _, _, c in stored
        )

    few_calls, few_tokens = await run(40, 110, 150)
    many_calls, many_tokens = await run(160, 25, 40)
    print(
        f"40 long turns: {few_calls} summary calls for {few_tokens} tokens; "
        f"160 short turns: {many_calls} summary calls for {many_tokens} tokens"
    )
    assert 0.75 < many_tokens / few_tokens < 1.33
    assert few_calls >= 2
    # Four times the turns for about the same history: about the same calls, not four times.
    assert many_calls <= few_calls * 1.5 + 1


async def test_a_failing_summary_falls_back_to_leaving_turns_out_and_says_so(
    alice, small_model, fake_upstream
):
    model = await db(small_model)()
    conversation = await db(_stored_history)(alice, model, 30, random.Random(7))
    upstream = Upstream(random.Random(8), fail_summaries=True)
    fake_upstream.responder = upstream
    communicator, _ = await open_socket(alice)
    frames = await _send(communicator, "And what now?", str(conversation.id))
    await communicator.disconnect()
    await settle()

    assert [kind for kind, _ in upstream.log] == ["summary", "reply"]
    body = upstream.log[-1][1]
    assert counted(body) <= BUDGET
    assert body["messages"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert body["messages"][-1] == {"role": "user", "content": "And what now?"}
    done = frames[-1]
    assert done["status"] == "complete"
    assert "could not be summarized" in done["html"] and "summarizer is down" in done["html"]
    context = next(f for f in frames if f["type"] == "context")
    assert "earlier messages were not sent" in context["html"]
    record = await db(ReplyContext.objects.get)(reply_id=done["message"])
    assert record.summary_id is None and record.not_sent_count == record.earlier_count > 0
    assert not await db(Summary.objects.exists)()


async def test_an_oversize_newest_message_is_refused_and_nothing_is_sent(
    alice, small_model, fake_upstream
):
    model = await db(small_model)()
    conversation = await db(_stored_history)(alice, model, 3, random.Random(3))
    before = await db(_messages)(conversation.id)
    communicator, _ = await open_socket(alice)
    huge = "lorem ipsum dolor " * 400
    await communicator.send_json_to(
        {
            "type": "send",
            "conversation": str(conversation.id),
            "content": huge,
            "client_id": str(uuid.uuid4()),
        }
    )
    error = await communicator.receive_json_from(timeout=10)
    await communicator.disconnect()

    assert error["type"] == "error" and error["code"] == "context_too_large"
    assert f"at most {BUDGET:,}" in error["message"]
    assert "shorten the message" in error["message"]
    assert fake_upstream.requests == []
    assert await db(_messages)(conversation.id) == before


async def test_reported_prompt_tokens_correct_the_estimate_on_the_next_request(
    alice, small_model, fake_upstream
):
    # "drop" so that only the correction changes what is sent.
    model = await db(small_model)(context_strategy="drop")
    conversation = await db(_stored_history)(alice, model, 30, random.Random(11))
    # This provider counts twice as many tokens as our tokenizer does.
    upstream = Upstream(random.Random(12), factor=2.0)
    fake_upstream.responder = upstream
    communicator, _ = await open_socket(alice)
    await _send(communicator, "First question", str(conversation.id))
    await _send(communicator, "Second question", str(conversation.id))
    await communicator.disconnect()
    await settle()

    first, second = (body for _, body in upstream.log)
    # Before any report our estimate is trusted and the request fills the budget...
    assert BUDGET * 0.7 < counted(first) <= BUDGET
    # ...after the provider reported twice as much, the next one is sized in its tokens.
    assert counted(second) * 2 <= BUDGET
    assert len(second["messages"]) < len(first["messages"])
    calibration = await db(TokenCalibration.objects.get)(chat_model_id=model.id)
    assert calibration.reported / calibration.estimated == pytest.approx(2.0, rel=0.01)


async def test_the_summary_is_reused_and_the_divider_survives_a_reload(
    alice, small_model, fake_upstream, client
):
    model = await db(small_model)()
    conversation = await db(_stored_history)(alice, model, 14, random.Random(21))
    upstream = Upstream(random.Random(22))
    fake_upstream.responder = upstream
    communicator, _ = await open_socket(alice)
    first = await _send(communicator, "Where were we?", str(conversation.id))
    second = await _send(communicator, "Go on.", str(conversation.id))
    await communicator.disconnect()
    await settle()

    # Summary calls (one per slice of the backlog) for the first message; the second message
    # reuses the stored summary as it is.
    kinds = [kind for kind, _ in upstream.log]
    calls = kinds.index("reply")
    assert calls >= 1 and kinds[calls:] == ["reply", "reply"]
    frame_kinds = [f["type"] for f in first]
    assert frame_kinds.index("reply.status") < frame_kinds.index("context")
    assert frame_kinds.index("context") < frame_kinds.index("reply.delta")
    assert "reply.status" not in [f["type"] for f in second]
    chain = await db(lambda: list(Summary.objects.order_by("id")))()
    assert len(chain) == calls
    assert [s.previous_id for s in chain] == [None, *(s.id for s in chain[:-1])]
    summary = chain[-1]
    assert summary.content == upstream.summaries[-1]
    assert summary.token_count == message_tokens(summary.content)
    assert summary.prompt_tokens == counted(upstream.log[calls - 1][1])
    assert not summary.usage_estimated
    assert summary.first_message_id < summary.last_message_id
    for _, body in upstream.log[calls:]:
        assert summary.content in body["messages"][0]["content"]

    record = await db(ReplyContext.objects.get)(reply_id=second[-1]["message"])
    assert record.summary_id == summary.id
    assert record.summarized_count == summary.message_count > 0

    def page() -> str:
        client.force_login(alice)
        return client.get(f"/c/{conversation.id}/").content.decode()

    html = await db(page)()
    label = f"{summary.message_count} earlier messages are summarized"
    assert label in html
    divider = html.index('id="context-divider"')
    # Right above the first message the model was sent, and before no other.
    assert html.index(f'data-message-id="{record.first_sent_id}"') > divider
    assert html.count('id="context-divider"') == 1
    assert "<summary>Read the summary</summary>" in html
    assert summary.content.split(" ")[2] in html[divider:]
    # Every stored message is still on the page.
    for message_id, _, _ in await db(_messages)(conversation.id):
        assert f'data-message-id="{message_id}"' in html


async def test_stop_while_summarizing_ends_the_reply_and_stores_no_summary(
    alice, small_model, fake_upstream
):
    model = await db(small_model)()
    conversation = await db(_stored_history)(alice, model, 30, random.Random(31))
    fake_upstream.responder = lambda body: Script.hang() if is_summary_call(body) else None
    communicator, _ = await open_socket(alice)
    await communicator.send_json_to(
        {
            "type": "send",
            "conversation": str(conversation.id),
            "content": "Hello again",
            "client_id": str(uuid.uuid4()),
        }
    )
    await receive_until(communicator, "reply.status", timeout=10)
    assert await asyncio.to_thread(fake_upstream.wait_for_requests, 1, 10)
    await communicator.send_json_to({"type": "stop", "conversation": str(conversation.id)})
    frames = await receive_until(communicator, "reply.done", timeout=10)
    await communicator.disconnect()
    await settle()

    assert frames[-1]["status"] == "stopped"
    assert await fake_upstream.wait_for_disconnect_async(5)
    assert len(fake_upstream.requests) == 1  # the summary call only; the reply never started
    assert not await db(Summary.objects.exists)()


async def test_an_admin_designated_model_writes_the_summaries(alice, small_model, fake_upstream):
    model = await db(small_model)()
    summarizer = await db(small_model)(
        name="summarizer", use_for_summaries=True, context_window=4000
    )
    conversation = await db(_stored_history)(alice, model, 30, random.Random(41))
    upstream = Upstream(random.Random(42))
    fake_upstream.responder = upstream
    communicator, _ = await open_socket(alice)
    await _send(communicator, "Summarize for me", str(conversation.id))
    await communicator.disconnect()
    await settle()

    (kind, call), (_, reply) = upstream.log
    assert kind == "summary" and call["model"] == "summarizer"
    assert reply["model"] == "fake-model"
    summary = await db(Summary.objects.get)()
    assert (summary.model_id, summary.model_name) == (summarizer.id, "summarizer")


async def test_a_page_opened_while_summarizing_is_told_so(alice, small_model, fake_upstream):
    model = await db(small_model)()
    conversation = await db(_stored_history)(alice, model, 30, random.Random(51))
    upstream = Upstream(random.Random(52))

    def slow_summaries(body: dict) -> Script:
        script = upstream(body)
        if is_summary_call(body):
            return Script.stream(script.texts, first_delay=1.5, usage=script.usage)
        return script

    fake_upstream.responder = slow_summaries
    first, _ = await open_socket(alice)
    await first.send_json_to(
        {
            "type": "send",
            "conversation": str(conversation.id),
            "content": "Catch me up",
            "client_id": str(uuid.uuid4()),
        }
    )
    await receive_until(first, "reply.status", timeout=10)
    second, _ = await open_socket(alice)
    await second.send_json_to({"type": "subscribe", "conversation": str(conversation.id)})
    joined = await receive_until(second, "subscribed", timeout=10)
    done = await receive_until(second, "reply.done", timeout=30)
    await first.disconnect()
    await second.disconnect()
    await settle()

    kinds = [f["type"] for f in joined]
    assert kinds == ["reply.snapshot", "reply.status", "subscribed"]
    assert joined[1]["text"] == "Summarizing earlier messages…"
    assert done[0]["type"] == "context"
