"""An uploaded tokenizer.json whose regex backtracks for ever is stopped at its time limit, in its confined
child, while the web goes on answering: tokenizers never run on the web's threads."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from django.conf import settings

from .text_builders import publish_text_model, wordpiece_tokenizer_json

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# Each `a…a!` costs the regex below ~0.1 s of backtracking (onig stops one search at its retry limit, not
# a text of many): a hundred of them, over ten seconds.
BOMB = ("a" * 23 + "!") * 100


def catastrophic_tokenizer_json() -> str:
    from tokenizers import Regex, Tokenizer, pre_tokenizers

    tokenizer = Tokenizer.from_str(wordpiece_tokenizer_json())
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("(a+)+b"), behavior="isolated")
    return tokenizer.to_str()


def test_a_catastrophic_tokenizer_regex_is_stopped_while_the_web_answers_other_calls(
    live_web, celery_worker_process, alice, alice_key
):
    publish_text_model(
        owner=alice,
        name="regex-bomb",
        task="feature-extraction",
        tokenizer_json=catastrophic_tokenizer_json(),
    )
    publish_text_model(owner=alice, name="well-behaved", task="feature-extraction")
    auth = {"Authorization": f"Bearer {alice_key}"}
    calm_url = f"{live_web.url}/api/v1/models/alice/well-behaved/predict"
    warm = requests.post(calm_url, json={"text": "a short sentence"}, headers=auth, timeout=60)
    assert warm.status_code == 200, warm.text

    outcome = {}

    def bomb() -> None:
        started = time.monotonic()
        response = requests.post(
            f"{live_web.url}/api/v1/models/alice/regex-bomb/predict",
            json={"text": BOMB},
            headers=auth,
            timeout=60,
        )
        outcome.update(status=response.status_code, text=response.text, seconds=time.monotonic() - started)

    thread = threading.Thread(target=bomb)
    thread.start()
    time.sleep(0.5)
    answered = 0
    while thread.is_alive():
        for method, url, body in (
            ("get", f"{live_web.url}/v2/health/ready", None),
            ("post", calm_url, {"text": "hi"}),
        ):
            started = time.monotonic()
            response = requests.request(method, url, json=body, headers=auth, timeout=10)
            assert response.status_code == 200, response.text
            assert time.monotonic() - started < 1.0, f"{url} took {time.monotonic() - started:.2f} s"
            answered += 1
        time.sleep(0.1)
    thread.join()
    assert answered >= 4
    assert outcome["status"] == 400, outcome
    assert "tokenizer took longer than" in outcome["text"]
    assert outcome["seconds"] < settings.INFERENCE_TOKENIZER_TIME_LIMIT + 5
