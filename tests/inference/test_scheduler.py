"""The runner pool's scheduler and tenants: a runner serves one tenant's models until it is replaced, and a
free runner prefers its own tenant's work unless another model has waited long enough."""

from __future__ import annotations

import time

import numpy as np
import pytest

from inference.runners.pool import RunnerPool, RunnerSettings
from inference.runners.supervisor import pool_from_settings
from inference.scheduling.scheduler import AFFINITY_WAIT, ModelRef, Request, Scheduler
from marketplace.sandbox.validation import confinement

from . import builders


def ref(sha: str, tenant: str) -> ModelRef:
    return ModelRef(
        sha256=sha,
        format="onnx",
        file_name="",
        size=0,
        inputs=("x",),
        outputs=(),
        batchable=False,
        tenant=tenant,
    )


def request(sha: str, tenant: str) -> Request:
    return Request(id=sha, model=ref(sha, tenant), tensors={}, source=None)


def test_a_free_runner_takes_its_own_tenants_model_before_another_that_just_arrived():
    scheduler = Scheduler(model_concurrency=1, max_batch=1)
    scheduler.put(request("bob-model", "bob"))
    scheduler.put(request("alice-model", "alice"))
    assert scheduler.take("alice")[0] == "alice-model"
    assert scheduler.take("alice")[0] == "bob-model"  # nothing of alice's left: the runner will be replaced


def test_a_model_that_waited_long_enough_goes_first_whatever_the_runners_tenant():
    scheduler = Scheduler(model_concurrency=1, max_batch=1)
    scheduler.put(request("bob-model", "bob"))
    time.sleep(AFFINITY_WAIT + 0.1)
    scheduler.put(request("alice-model", "alice"))
    assert scheduler.take("alice")[0] == "bob-model"


def test_without_a_tenant_the_scheduler_is_round_robin():
    scheduler = Scheduler(model_concurrency=2, max_batch=1)
    for sha in ("a", "b", "a", "b"):
        scheduler.put(request(sha, sha))
    taken = [scheduler.take()[0] for _ in range(4)]
    assert taken == ["a", "b", "a", "b"]


def test_a_withdrawn_request_is_never_taken_and_one_already_taken_cannot_be_withdrawn():
    scheduler = Scheduler(model_concurrency=2, max_batch=1)
    first, second, third = (Request(id=name, model=ref("m", "t"), tensors={}, source=None) for name in "123")
    for call in (first, second, third):
        scheduler.put(call)
    assert scheduler.take()[1] == [first]
    assert scheduler.withdraw("m", "2") is second
    assert scheduler.withdraw("m", "1") is None  # a runner has it
    assert scheduler.take()[1] == [third]
    assert scheduler.withdraw("m", "3") is None and scheduler.waiting("m") == 0


@pytest.mark.django_db
def test_a_runner_is_replaced_before_it_runs_another_tenants_model(alice, bob):
    pool = RunnerPool(
        name="tenants",
        runners=1,
        model_concurrency=1,
        max_batch=1,
        config=RunnerSettings(threads=1, confinement=confinement()),
        resolve_path=pool_from_settings("paths").resolve_path,
    ).start()
    try:
        versions = {
            owner.username: builders.publish(owner=owner, name="digits", data=builders.digits_onnx(seed=i))
            for i, owner in enumerate((alice, bob))
        }
        pixels = {"pixels": np.full((1, 64), 0.5, dtype=np.float32)}
        pids = []
        for owner in ("alice", "alice", "bob", "alice"):
            version = versions[owner]
            model = ModelRef(
                sha256=version.sha256,
                format="onnx",
                file_name=version.file.name,
                size=version.size,
                inputs=("pixels",),
                outputs=(),
                batchable=True,
                tenant=owner,
            )
            assert pool.run(model, pixels).succeeded
            pids.append(pool.runner_pids()[0])
        slot = pool.slots[0]
        assert pids[0] == pids[1] != pids[2] != pids[3]
        assert slot.restarts == {"tenant": 2}
    finally:
        pool.stop()
