"""A GGUF chat model on the live servers, called with the official `openai` client through `/v1/`: listed,
chatting plain and streamed, completions, stop sequences, JSON output, embeddings, errors in OpenAI's shape,
token quotas that the ledger, `/api/v1/usage` and the usage page agree with, and a client that hangs up
mid-stream."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
import uuid

import openai
import pytest
import requests
from django.test import Client

from inference.models import Prediction
from portal.models import ApiKey, UsageDay
from portal.services import quota_set

from .llm_builders import publish_smollm2

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

HELLO = [{"role": "user", "content": "Name three colors."}]
STORY = [{"role": "user", "content": "Tell a long story about the sea."}]


@pytest.fixture
def smol(alice):
    # A new name in every test: the live servers cache look-ups by name for a few seconds.
    name = f"smol-{uuid.uuid4().hex[:8]}"
    publish_smollm2(owner=alice, name=name)
    return f"alice/{name}"


@pytest.fixture
def client(live_web, bob_key):
    return openai.OpenAI(base_url=f"{live_web.url}/v1", api_key=bob_key, max_retries=0, timeout=120)


def records(user, model_slug: str):
    return Prediction.objects.filter(user=user, version__model__name=model_slug.split("/")[1])


def test_v1_models_lists_the_chat_model(client, smol):
    ids = [model.id for model in client.models.list()]
    assert smol in ids


def test_chat_answers_plainly_with_usage(client, smol, bob):
    answer = client.chat.completions.create(model=smol, messages=HELLO, max_tokens=12, temperature=0, seed=1)
    assert answer.object == "chat.completion"
    assert answer.model == smol
    [choice] = answer.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert 0 < answer.usage.completion_tokens <= 12
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    [record] = records(bob, smol)
    assert record.status == "succeeded"
    assert (record.prompt_tokens, record.completion_tokens) == (
        answer.usage.prompt_tokens,
        answer.usage.completion_tokens,
    )


def test_streamed_deltas_arrive_one_by_one_and_equal_the_plain_answer(client, smol):
    plain = client.chat.completions.create(model=smol, messages=HELLO, max_tokens=24, temperature=0, seed=7)
    stream = client.chat.completions.create(
        model=smol,
        messages=HELLO,
        max_tokens=24,
        temperature=0,
        seed=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks, arrivals = [], []
    for chunk in stream:
        chunks.append(chunk)
        arrivals.append(time.monotonic())
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 3
    assert "".join(pieces) == plain.choices[0].message.content
    [finish] = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish.choices[0].finish_reason == plain.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens
    assert arrivals[-1] - arrivals[1] > 0.02  # pieces came over time, not in one burst at the end


def test_the_stream_is_sse_unbuffered_and_ends_with_done(live_web, bob_key, smol):
    response = requests.post(
        f"{live_web.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {bob_key}"},
        json={"model": smol, "messages": HELLO, "max_tokens": 4, "stream": True},
        stream=True,
        timeout=60,
    )
    assert response.headers["Content-Type"].startswith("text/event-stream")
    assert response.headers["X-Accel-Buffering"] == "no"
    events = [line for line in response.iter_lines() if line]
    assert events[-1] == b"data: [DONE]"
    assert all(line.startswith(b"data: ") for line in events)


def test_completions_and_stop_sequences(client, smol):
    answer = client.completions.create(
        model=smol, prompt="One, two, three, four,", max_tokens=12, temperature=0, seed=1
    )
    text = answer.choices[0].text
    assert answer.object == "text_completion" and text
    stop_word = text.split()[1] if len(text.split()) > 1 else text.strip()[:3]
    stopped = client.completions.create(
        model=smol, prompt="One, two, three, four,", max_tokens=12, temperature=0, seed=1, stop=[stop_word]
    )
    assert stop_word not in stopped.choices[0].text
    assert stopped.choices[0].finish_reason == "stop"
    assert text.startswith(stopped.choices[0].text)


def test_json_schema_output_parses(client, smol):
    schema = {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}
    answer = client.chat.completions.create(
        model=smol,
        messages=[{"role": "user", "content": "Give a color as JSON."}],
        max_tokens=40,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "color", "schema": schema}},
    )
    assert isinstance(json.loads(answer.choices[0].message.content)["color"], str)


def test_it_rejects_a_missing_or_wrong_key(live_web, smol):
    wrong = openai.OpenAI(base_url=f"{live_web.url}/v1", api_key="mp_00000000_nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.chat.completions.create(model=smol, messages=HELLO, max_tokens=2)
    assert caught.value.status_code == 401
    assert requests.get(f"{live_web.url}/v1/models", timeout=10).status_code == 401


def test_a_private_model_is_404_to_others(client, alice):
    name = f"secret-{uuid.uuid4().hex[:8]}"
    publish_smollm2(owner=alice, name=name, visibility="private")
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model=f"alice/{name}", messages=HELLO, max_tokens=2)
    assert caught.value.body["code"] == "model_not_found"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content"),
        ({"messages": HELLO, "grammar": "root ::= x"}, "grammar"),
        ({"messages": HELLO, "n": 2}, "n"),
        ({"messages": HELLO, "id_slot": 1}, "id_slot"),
    ],
)
def test_it_rejects_malformed_bodies_naming_the_field(live_web, bob_key, smol, body, param):
    response = requests.post(
        f"{live_web.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {bob_key}"},
        json={"model": smol, **body},
        timeout=30,
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert param.split(".")[0].split("[")[0] in error["message"]


def test_it_rejects_a_prompt_longer_than_the_context(client, smol):
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model=smol, messages=[{"role": "user", "content": "word " * 9000}], max_tokens=4
        )
    assert caught.value.body["code"] == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=smol, messages=HELLO, max_tokens=100_000)


def test_a_token_quota_runs_out_with_429_and_the_ledger_agrees(live_web, client, smol, bob, bob_key):
    # The day's window: a minute's may roll over during the test on a busy machine, and start counting anew.
    quota_set(user=bob, tokens_per_minute=100_000, tokens_per_day=400)
    used = 0
    with pytest.raises(openai.RateLimitError) as caught:
        for _ in range(20):
            answer = client.chat.completions.create(model=smol, messages=HELLO, max_tokens=40, temperature=0)
            used += answer.usage.total_tokens
    assert int(caught.value.response.headers["Retry-After"]) >= 1
    assert used <= 400
    rows = records(bob, smol)
    assert sum(r.prompt_tokens + r.completion_tokens for r in rows) == used
    day = UsageDay.objects.filter(user=bob)
    assert sum(d.prompt_tokens + d.completion_tokens for d in day) == used
    usage = requests.get(
        f"{live_web.url}/api/v1/usage", headers={"Authorization": f"Bearer {bob_key}"}, timeout=10
    ).json()
    assert usage["used"]["tokens_per_day"] == used
    assert usage["remaining"]["tokens_per_day"] == 400 - used


def test_the_usage_page_shows_the_tokens_of_chat_calls_beside_their_requests(client, smol, bob):
    plain = client.chat.completions.create(model=smol, messages=HELLO, max_tokens=10, temperature=0)
    streamed = client.chat.completions.create(
        model=smol,
        messages=HELLO,
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    last = list(streamed)[-1]
    prompt = plain.usage.prompt_tokens + last.usage.prompt_tokens
    completion = plain.usage.completion_tokens + last.usage.completion_tokens
    page = Client()
    page.force_login(bob)
    # The stream's record is written once its answer has ended, which the client may see a moment before.
    deadline = time.monotonic() + 10
    while True:
        html = page.get("/settings/usage/").content.decode()
        row = re.search(r"<tr><td>[^<]+</td><td>(\d+)</td>.*?<td class=\"tokens\">([^<]*)</td>", html)
        if (row and row.group(2)) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert row is not None, html
    assert (row.group(1), row.group(2)) == ("2", f"{prompt} + {completion}")
    assert f'class="meter-used tokens-used">{prompt + completion}<' in html


def test_a_client_that_hangs_up_stops_its_generation_and_is_recorded(live_web, client, smol, bob, bob_key):
    response = requests.post(
        f"{live_web.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {bob_key}"},
        json={
            "model": smol,
            "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 1500,
            "stream": True,
        },
        stream=True,
        timeout=60,
    )
    lines = response.iter_lines()
    received = 0
    for line in lines:
        if line.startswith(b"data: {") and b'"content":"' in line:
            received += 1
        if received >= 10:
            break
    response.close()
    started = time.monotonic()
    answer = client.chat.completions.create(model=smol, messages=HELLO, max_tokens=2, stream=True)
    next(iter(answer))
    assert time.monotonic() - started < 1.0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        cut = records(bob, smol).filter(status="canceled").first()
        if cut is not None:
            break
        time.sleep(0.1)
    assert cut is not None
    # It stopped where the client left: ten pieces, counted as llama.cpp counts them with each (the count sent
    # with a piece may not include that piece yet).
    assert 9 <= cut.completion_tokens < 1500
    assert cut.prompt_tokens > 0


def test_a_caller_who_leaves_while_waiting_for_a_slot_leaves_the_queue(live_web, smol, alice, bob, bob_key):
    """Bob's four long streams hold the model's slots; Alice's call waits at the gate, and she goes away. When
    the slots free, nothing runs for her and nothing is counted: she left the queue when she left."""
    alice_key = ApiKey.issue(user=alice, name="chat", scopes=["read", "predict"])[1]
    for user in (alice, bob):
        quota_set(user=user, tokens_per_minute=1_000_000, tokens_per_day=10_000_000)
    streams = []
    try:
        for _ in range(4):
            response = requests.post(
                f"{live_web.url}/v1/chat/completions",
                headers={"Authorization": f"Bearer {bob_key}"},
                json={"model": smol, "messages": STORY, "max_tokens": 1500, "stream": True, "temperature": 0},
                stream=True,
                timeout=60,
            )
            lines = response.iter_lines()
            streams.append((response, lines))  # kept: a line iterator let go closes its connection
            while b'"content":"' not in next(lines):  # its slot is taken: it is generating
                pass
        body = json.dumps({"model": smol, "messages": HELLO, "max_tokens": 5}).encode()
        with socket.create_connection(("127.0.0.1", live_web.port), timeout=10) as waiting:
            waiting.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                + f"Authorization: Bearer {alice_key}\r\nContent-Type: application/json\r\n".encode()
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(1.0)  # at the gate by now, behind Bob's four
        # Bob's calls still hold the slots (each is recorded as it ends).
        assert not records(bob, smol).exists()
    finally:
        for response, _ in streams:
            response.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and records(bob, smol).count() < 4:
        time.sleep(0.1)
    assert records(bob, smol).count() == 4  # the slots are free
    time.sleep(2)
    assert not records(alice, smol).exists()
    assert not UsageDay.objects.filter(user=alice).exists()


def test_two_users_streams_take_fair_turns(live_web, smol, alice, bob, bob_key):
    """Bob fills the model's four slots (one of his calls short) and queues two more; Alice's call, sent after
    them, takes the first slot that frees, before Bob's queued ones (a full queue's 503 is in
    test_llm_fairness)."""
    alice_key = ApiKey.issue(user=alice, name="chat", scopes=["read", "predict"])[1]
    for user in (alice, bob):
        quota_set(user=user, tokens_per_minute=1_000_000, tokens_per_day=10_000_000)
    first_token: dict[str, float] = {}
    lock = threading.Lock()

    def stream(name: str, key: str, max_tokens: int) -> threading.Thread:
        def run() -> None:
            chat = openai.OpenAI(base_url=f"{live_web.url}/v1", api_key=key, max_retries=0, timeout=300)
            answer = chat.chat.completions.create(
                model=smol,
                messages=[{"role": "user", "content": "Tell a long story about the sea."}],
                max_tokens=max_tokens,
                temperature=0,
                stream=True,
            )
            for chunk in answer:
                if chunk.choices and chunk.choices[0].delta.content:
                    with lock:
                        first_token.setdefault(name, time.monotonic())

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    # Bob's four running calls: one ends early and frees the first slot; the other three run long.
    threads = [stream("bob-short", bob_key, 80)] + [stream(f"bob-{i}", bob_key, 320) for i in range(3)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(first_token) < 4:
        time.sleep(0.02)
    assert len(first_token) == 4, first_token
    threads += [stream(f"bob-queued-{i}", bob_key, 40) for i in range(2)]
    time.sleep(0.3)  # Bob's two wait at the gate before Alice asks
    threads.append(stream("alice", alice_key, 40))
    for thread in threads:
        thread.join(300)
    queued = [first_token[f"bob-queued-{i}"] for i in range(2)]
    assert first_token["alice"] < min(queued), first_token


def test_embeddings_of_a_text_model(live_web, celery_worker_process, alice, client):
    from . import builders
    from .text_builders import tiny_encoder_onnx, wordpiece_tokenizer_json

    key = ApiKey.issue(user=alice, name="up", scopes=["read", "predict", "upload"])[1]
    response = requests.post(
        f"{live_web.url}/api/v1/models",
        headers={"Authorization": f"Bearer {key}"},
        data={"name": f"enc-{uuid.uuid4().hex[:8]}", "task": "feature-extraction", "example": "the cat sat"},
        files={
            "file": ("encoder.onnx", tiny_encoder_onnx()),
            "tokenizer": ("tokenizer.json", wordpiece_tokenizer_json().encode()),
        },
        timeout=120,
    )
    assert response.status_code == 201, response.text
    assert builders  # the encoder above is the text models' own test encoder
    answer = client.embeddings.create(model=response.json()["slug"], input=["the cat sat", "on the mat"])
    assert [d.index for d in answer.data] == [0, 1]
    assert len(answer.data[0].embedding) > 1
    assert answer.usage.prompt_tokens > 0
