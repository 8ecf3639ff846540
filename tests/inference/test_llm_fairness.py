"""The turns at a chat model's slots (inference.llm.fairness): fewest slots held goes first, a full queue is
refused, a caller that leaves while waiting gives its place up."""

from __future__ import annotations

import threading
import time

import pytest

from inference.llm.fairness import Busy, FairGate


def waiter(gate: FairGate, user: str, order: list, gone=lambda: False) -> threading.Thread:
    def run():
        if gate.enter(user, gone):
            order.append(user)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def settle() -> None:
    time.sleep(0.3)


def test_a_freed_slot_goes_to_the_user_holding_fewest_not_to_the_longest_queue():
    gate = FairGate(slots=2, queue_max=16)
    order: list[str] = []
    assert gate.enter("a", lambda: False) and gate.enter("a", lambda: False)  # a holds both slots
    threads = [waiter(gate, "a", order) for _ in range(4)]
    settle()
    threads.append(waiter(gate, "b", order))  # b comes last, behind four of a's
    settle()
    assert order == []
    gate.leave("a")
    settle()
    assert order == ["b"]  # b held none, a held two
    gate.leave("a")
    settle()
    assert order == ["b", "a"]
    gate.leave("b")
    gate.leave("a")
    settle()
    assert order == ["b", "a", "a", "a"]


def test_a_full_queue_is_refused_and_nothing_is_queued():
    gate = FairGate(slots=1, queue_max=2)
    order: list[str] = []
    assert gate.enter("a", lambda: False)
    waiter(gate, "a", order)
    waiter(gate, "b", order)
    settle()
    with pytest.raises(Busy, match="2 calls are waiting"):
        gate.enter("c", lambda: False)
    assert len(gate.waiting) == 2


def test_a_caller_gone_while_waiting_leaves_its_place():
    gate = FairGate(slots=1, queue_max=4)
    order: list[str] = []
    gone = threading.Event()
    assert gate.enter("a", lambda: False)
    waiter(gate, "b", order, gone=gone.is_set)
    waiter(gate, "c", order)
    settle()
    gone.set()
    settle()
    assert [t.user for t in gate.waiting] == ["c"]
    gate.leave("a")
    settle()
    assert order == ["c"]


def test_a_host_that_is_busy_is_a_503_with_retry_after_for_the_caller(rf):
    from django.views.decorators.http import require_POST

    from inference.llm.generation import GenerationUnavailable, _tokens_of
    from inference.protocols.openai_api import openai_view

    waiting = "16 calls are waiting for this model, as many as it may queue"
    busy = {"error": {"kind": "busy", "message": waiting}}
    with pytest.raises(GenerationUnavailable, match=r"The model is busy \(16 calls are waiting") as refused:
        _tokens_of(busy, request=None, context=2048)

    @openai_view(require_POST)
    def chat(request):
        raise refused.value

    answer = chat(rf.post("/v1/chat/completions"))
    assert answer.status_code == 503 and answer["Retry-After"] == "5"
    assert "The model is busy" in answer.content.decode()
