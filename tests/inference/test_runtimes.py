"""Runtimes in runners: ONNX Runtime, TorchScript, torch.export; the session LRU; the file cache."""

from __future__ import annotations

import io
import os

import numpy as np
import onnxruntime
import pytest

from inference.runners.runtimes import OnnxRuntime, OpenRequest, RuntimeFailure, Sessions
from inference.runners.supervisor import pool_from_settings
from inference.runtimes import ModelFileUnavailable, local_model_path
from inference.services import target_find

from . import builders
from .conftest import assert_same, local_run

pytestmark = pytest.mark.django_db


def model_ref(version):
    """The runner pool's reference to a published version, as the web builds it for a request."""
    return target_find(
        owner=version.model.owner.username, name=version.model.name, number=None, user=None
    ).model_ref


def test_onnx_models_run_in_a_runner_as_in_a_local_session(alice, mixed, runner_pool):
    inputs = builders.mixed_inputs(batch=5)
    result = runner_pool.run(model_ref(mixed), inputs)
    assert result.succeeded, result.error
    expected = local_run(builders.mixed_onnx(), inputs)
    assert set(result.outputs) == set(expected)
    for name, array in expected.items():
        assert_same(array, result.outputs[name])
    assert result.compute_ms > 0 and result.finished_at >= result.started_at > 0


def test_the_runners_processes_are_not_this_one(runner_pool, alice, mixed):
    runner_pool.run(model_ref(mixed), builders.mixed_inputs(batch=1))
    pids = runner_pool.runner_pids()
    assert pids and os.getpid() not in pids


def test_torchscript_and_torch_export_models_run(alice, runner_pool):
    import torch

    data = builders.torchscript_model()
    scripted = builders.publish(
        owner=alice, name="ts", data=data, format="torchscript", signature=builders.TORCHSCRIPT_SIGNATURE
    )
    x, idx = np.ones((2, 4), dtype=np.float32), np.array([3, 4])
    result = runner_pool.run(model_ref(scripted), {"x": x, "idx": idx})
    assert result.succeeded, result.error
    probs, idx2 = torch.jit.load(io.BytesIO(data))(torch.from_numpy(x), torch.from_numpy(idx))
    np.testing.assert_allclose(result.outputs["probs"], probs.detach().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(result.outputs["idx2"], [6, 8])

    exported = builders.publish(
        owner=alice,
        name="ex",
        data=builders.torch_export_model(),
        format="torch-export",
        signature=builders.TORCH_EXPORT_SIGNATURE,
    )
    result = runner_pool.run(model_ref(exported), {"x": np.ones((4, 3), dtype=np.float32)})
    assert result.succeeded, result.error
    np.testing.assert_array_equal(result.outputs["y"], np.full((4, 3), 3.0, dtype=np.float32))


def test_a_file_that_is_no_model_fails_its_request_with_the_runtimes_message(alice, runner_pool):
    version = builders.publish(
        owner=alice,
        name="broken",
        data=b"not an onnx file",
        signature={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]},
    )
    result = runner_pool.run(model_ref(version), {"x": np.zeros(1, dtype=np.float32)})
    assert not result.succeeded and "could not open the model" in result.error
    assert not result.server_fault  # the model's fault, not the server's


def test_onnx_sessions_use_the_runners_threads_and_no_inter_op_pool(tmp_path):
    path = tmp_path / "mixed.onnx"
    path.write_bytes(builders.mixed_onnx())
    runtime = OnnxRuntime(open_request(path, "mixed"), threads=3)
    options = runtime.session.get_session_options()
    assert options.intra_op_num_threads == 3 and options.inter_op_num_threads == 1
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL


def test_runner_threads_and_model_concurrency_follow_the_settings(settings):
    settings.INFERENCE_RUNNERS, settings.INFERENCE_THREADS_PER_RUNNER = 4, 0
    settings.INFERENCE_MODEL_CONCURRENCY = 0
    pool = pool_from_settings("settings-check")  # not started: no runner process
    assert len(pool.slots) == 4
    assert pool.config.threads == max(1, (os.cpu_count() or 1) // 4)
    assert pool.scheduler.cap == 3  # one model never takes every runner
    settings.INFERENCE_THREADS_PER_RUNNER, settings.INFERENCE_MODEL_CONCURRENCY = 2, 4
    pool = pool_from_settings("settings-check")
    assert pool.config.threads == 2 and pool.scheduler.cap == 4


def open_request(path, sha256: str) -> OpenRequest:
    return OpenRequest(sha256=sha256, path=str(path), format="onnx", input_names=(), output_names=())


def test_the_session_lru_keeps_sessions_within_its_memory_budget(tmp_path):
    first, second = tmp_path / "a.onnx", tmp_path / "b.onnx"
    first.write_bytes(builders.digits_onnx(seed=1))
    second.write_bytes(builders.digits_onnx(seed=2))
    size = first.stat().st_size
    sessions = Sessions(budget_bytes=int(size * Sessions.MEMORY_FACTOR * 1.5), threads=1)
    runtime = sessions.get(open_request(first, "a"), size)
    assert sessions.get(open_request(first, "a"), size) is runtime  # reused, keyed by sha256
    sessions.get(open_request(second, "b"), second.stat().st_size)
    assert list(sessions.open) == ["b"]  # the least recently used one was closed


def test_the_session_lru_closes_the_least_recently_used(tmp_path):
    paths = {}
    for name, seed in (("a", 1), ("b", 2), ("c", 3)):
        paths[name] = tmp_path / f"{name}.onnx"
        paths[name].write_bytes(builders.digits_onnx(seed=seed))
    size = paths["a"].stat().st_size
    sessions = Sessions(budget_bytes=int(size * Sessions.MEMORY_FACTOR * 2.5), threads=1)
    sessions.get(open_request(paths["a"], "a"), size)
    sessions.get(open_request(paths["b"], "b"), size)
    sessions.get(open_request(paths["a"], "a"), size)  # a is now the most recently used
    sessions.get(open_request(paths["c"], "c"), size)
    assert list(sessions.open) == ["a", "c"]


def test_a_model_larger_than_the_budget_is_still_opened_alone(tmp_path):
    path = tmp_path / "a.onnx"
    path.write_bytes(builders.digits_onnx(seed=1))
    sessions = Sessions(budget_bytes=1, threads=1)
    sessions.get(open_request(path, "a"), path.stat().st_size)
    assert list(sessions.open) == ["a"]


def test_an_unknown_format_or_a_bad_file_is_a_runtime_failure(tmp_path):
    path = tmp_path / "junk"
    path.write_bytes(b"junk")
    sessions = Sessions(budget_bytes=1 << 30, threads=1)
    with pytest.raises(RuntimeFailure, match="no runtime for format 'keras'"):
        sessions.get(OpenRequest("k", str(path), "keras", (), ()), 4)
    with pytest.raises(RuntimeFailure, match="could not open the model"):
        sessions.get(open_request(path, "j"), 4)
    assert not sessions.open


def test_model_files_are_cached_locally_by_sha256_from_storage(alice, settings, tmp_path):
    settings.INFERENCE_MODEL_CACHE_DIR = tmp_path / "cache"
    version = builders.publish(owner=alice, name="digits", data=builders.digits_onnx())
    path = local_model_path(sha256=version.sha256, file_name=version.file.name)
    assert path == tmp_path / "cache" / version.sha256
    assert path.read_bytes() == builders.digits_onnx()
    assert local_model_path(sha256=version.sha256, file_name="models/gone") == path  # cached: not re-read


def test_a_file_that_does_not_match_its_sha256_is_refused(alice, settings, tmp_path):
    settings.INFERENCE_MODEL_CACHE_DIR = tmp_path / "cache"
    version = builders.publish(owner=alice, name="digits", data=builders.digits_onnx())
    with pytest.raises(ModelFileUnavailable, match="does not match its sha256"):
        local_model_path(sha256="0" * 64, file_name=version.file.name)
    assert not (tmp_path / "cache" / ("0" * 64)).exists()
    assert not list((tmp_path / "cache").glob(".part-*"))  # no partial copy left behind


def test_a_missing_model_file_is_unavailable(settings, tmp_path):
    settings.INFERENCE_MODEL_CACHE_DIR = tmp_path / "cache"
    with pytest.raises(ModelFileUnavailable, match="not available"):
        local_model_path(sha256="1" * 64, file_name="models/11/missing")
