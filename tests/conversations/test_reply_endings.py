"""How a finished reply shows what the provider said about its end: the length limit, the content
filter, tool calls, and reasoning (collapsed once the reply is done). Over the websocket, against
the fake upstream."""

from __future__ import annotations

import html
import re
import uuid

import pytest
from channels.db import database_sync_to_async

from tests.conversations.wsclient import open_socket, receive_until, settle
from tests.factories import make_chat_model, make_user
from tests.fake_upstream import Script

pytestmark = pytest.mark.django_db(transaction=True)


async def _reply_html(script: Script, fake_upstream) -> str:
    await database_sync_to_async(make_chat_model)(fake_upstream.base_url)
    user = await database_sync_to_async(make_user)()
    fake_upstream.enqueue(script)
    communicator, connected = await open_socket(user)
    assert connected
    await communicator.send_json_to(
        {"type": "send", "conversation": None, "content": "Go", "client_id": str(uuid.uuid4())}
    )
    frames = await receive_until(communicator, "reply.done")
    await communicator.disconnect()
    await settle()
    return html.unescape(frames[-1]["html"])


async def test_a_reply_cut_at_the_length_limit_says_so(fake_upstream):
    page = await _reply_html(Script.stream(["Once upon"], finish_reason="length"), fake_upstream)
    assert "The reply reached the length limit." in page
    # The hook the Continue action will use.
    assert 'data-finish-reason="length"' in page


async def test_a_filtered_reply_says_the_provider_filtered_it(fake_upstream):
    script = Script.stream(["Partial"], finish_reason="content_filter")
    page = await _reply_html(script, fake_upstream)
    assert "Partial" in page
    assert "The provider's content filter stopped this reply." in page


async def test_tool_calls_are_shown_not_run(fake_upstream):
    calls = [{"id": "call_1", "name": "get_weather", "arguments": '{"city":"Bern","days":2}'}]
    script = Script.stream([], tool_calls=calls, finish_reason="tool_calls")
    page = await _reply_html(script, fake_upstream)
    assert "The model asked to call tools" in page and "not run by this app" in page
    assert "get_weather" in page
    text = re.sub(r"<[^>]+>", "", page)  # the arguments are highlighted as JSON
    assert '{\n  "city": "Bern",\n  "days": 2\n}' in text  # indented for reading
    assert len(fake_upstream.requests) == 1  # nothing was called back


async def test_reasoning_is_collapsed_once_the_reply_is_done(fake_upstream):
    script = Script.stream(["42"], reasoning=["Add ", "them."], reasoning_field="reasoning")
    page = await _reply_html(script, fake_upstream)
    assert '<details class="reasoning">' in page
    assert "<summary>Reasoning</summary>" in page and "Add them." in page
