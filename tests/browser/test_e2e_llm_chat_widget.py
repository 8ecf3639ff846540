"""The chat on a GGUF chat model's page, in Chromium against the real processes: tokens appear while the
answer is still streaming, a second message continues the conversation, and Stop ends an answer early, which
is then recorded with the tokens it produced."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from playwright.sync_api import expect

from inference.models import Prediction
from tests.inference.llm_builders import publish_smollm2

from .test_e2e_text_widgets import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

ANSWER_TIMEOUT_MS = 120_000


def answer_states(page, index: int, seconds: float) -> list[tuple[str, bool]]:
    """(text, still streaming) of the `index`-th answer, sampled until it stops streaming."""
    states = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = page.evaluate(
            """(index) => {
                const answers = document.querySelectorAll('#chat .chat-assistant .chat-text');
                const answer = answers[index];
                return answer ? [answer.textContent, answer.classList.contains('streaming')] : null;
            }""",
            index,
        )
        if state is not None:
            states.append(tuple(state))
            if not state[1]:
                break
        time.sleep(0.02)
    return states


def test_the_chat_streams_tokens_continues_and_stops(page, alice, live_web):
    name = f"chat-{uuid.uuid4().hex[:8]}"
    publish_smollm2(owner=alice, name=name)
    log_in(page, live_web.url)
    page.goto(f"{live_web.url}/models/alice/{name}/")
    chat = page.locator("#chat")
    expect(chat.get_by_role("heading", name="Chat")).to_be_visible()
    expect(page.locator("#try-it")).to_have_count(0)
    # The code samples call the same model through the OpenAI API.
    expect(page.locator(".snippet")).not_to_have_count(0)
    expect(page.locator(".snippet").first).to_contain_text(f"alice/{name}")

    chat.get_by_label("Message").fill("Write a short poem about the sea.")
    chat.locator("summary", has_text="Settings").click()
    chat.get_by_label("Max tokens").fill("96")
    chat.get_by_label("Temperature").fill("0")
    chat.get_by_role("button", name="Send").click()
    states = answer_states(page, 0, ANSWER_TIMEOUT_MS / 1000)
    streaming_texts = {text for text, streaming in states if streaming and text}
    # Seen growing while the answer was still coming: several different partial texts before the end.
    assert len(streaming_texts) >= 3, states[:10]
    final = states[-1]
    assert not final[1] and len(final[0]) > max(len(text) for text in streaming_texts) - 1
    expect(chat.locator(".chat-status")).to_have_text(re.compile("Done|Stopped at the token limit"))

    # The conversation goes on: the second answer comes after the first, under the second question.
    chat.get_by_label("Message").fill("Now one about mountains, as long as you can.")
    chat.get_by_label("Max tokens").fill("400")
    chat.get_by_role("button", name="Send").click()
    expect(chat.locator(".chat-assistant")).to_have_count(2)
    expect(chat.locator(".chat-assistant .chat-text").nth(1)).not_to_have_text("", timeout=ANSWER_TIMEOUT_MS)
    chat.get_by_role("button", name="Stop").click()
    expect(chat.locator(".chat-status")).to_have_text("Stopped.")
    # Nothing more arrives once stopped.
    second = chat.locator(".chat-assistant .chat-text").nth(1)
    stopped_at = second.text_content()
    page.wait_for_timeout(500)
    assert second.text_content() == stopped_at
    expect(chat.get_by_role("button", name="Send")).to_be_enabled()
    expect(chat.locator(".chat-user")).to_have_count(2)

    # Both calls are the visitor's, from the page; the stopped one recorded with the tokens it produced.
    deadline = time.monotonic() + 30
    rows = Prediction.objects.filter(user=alice, version__model__name=name)
    while time.monotonic() < deadline and rows.filter(finished_at__isnull=False).count() < 2:
        time.sleep(0.2)
    ended = list(rows.order_by("created_at").values("source", "status", "completion_tokens", "prompt_tokens"))
    assert len(ended) == 2, ended
    assert all(row["source"] == "web" and row["prompt_tokens"] > 0 for row in ended)
    assert ended[1]["status"] == "canceled" and 0 < ended[1]["completion_tokens"] < 400
    assert page.errors == []
