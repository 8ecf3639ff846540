"""Runtimes opened from a version: ONNX Runtime, TorchScript, torch.export; the session LRU and file cache."""

from __future__ import annotations

import io

import numpy as np
import pytest

from inference.runtimes import OnnxRuntime, SessionCache, TorchRuntime, local_model_path, threads_per_session
from inference.services import version_ref

from . import builders
from .conftest import assert_same, local_run

pytestmark = pytest.mark.django_db


def test_onnx_runtime_matches_a_local_session(alice, mixed):
    runtime = SessionCache().get(version_ref(mixed))
    assert isinstance(runtime, OnnxRuntime)
    inputs = builders.mixed_inputs(batch=5)
    outputs = runtime.run(inputs)
    for name, array in local_run(builders.mixed_onnx(), inputs).items():
        assert_same(array, outputs[name])
    assert runtime.session.get_session_options().intra_op_num_threads == threads_per_session()
    assert runtime.session.get_session_options().inter_op_num_threads == 1


def test_torchscript_and_torch_export_models_run(alice):
    import torch

    data = builders.torchscript_model()
    scripted = builders.publish(
        owner=alice, name="ts", data=data, format="torchscript", signature=builders.TORCHSCRIPT_SIGNATURE
    )
    runtime = SessionCache().get(version_ref(scripted))
    assert isinstance(runtime, TorchRuntime) and runtime.platform == "pytorch_libtorch"
    x, idx = np.ones((2, 4), dtype=np.float32), np.array([3, 4])
    outputs = runtime.run({"x": x, "idx": idx})
    probs, idx2 = torch.jit.load(io.BytesIO(data))(torch.from_numpy(x), torch.from_numpy(idx))
    np.testing.assert_allclose(outputs["probs"], probs.detach().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(outputs["idx2"], [6, 8])

    exported = builders.publish(
        owner=alice,
        name="ex",
        data=builders.torch_export_model(),
        format="torch-export",
        signature=builders.TORCH_EXPORT_SIGNATURE,
    )
    outputs = SessionCache().get(version_ref(exported)).run({"x": np.ones((4, 3), dtype=np.float32)})
    np.testing.assert_array_equal(outputs["y"], np.full((4, 3), 3.0, dtype=np.float32))


def test_the_session_cache_keeps_sessions_within_its_memory_budget(alice, settings):
    first = builders.publish(owner=alice, name="a", data=builders.digits_onnx(seed=1))
    second = builders.publish(owner=alice, name="b", data=builders.digits_onnx(seed=2))
    settings.INFERENCE_SESSION_MEMORY_MB = (first.size * SessionCache.MEMORY_FACTOR * 1.5) / (1024 * 1024)
    cache = SessionCache()
    runtime = cache.get(version_ref(first))
    assert cache.get(version_ref(first)) is runtime  # reused, keyed by sha256
    cache.get(version_ref(second))
    assert list(cache.sessions) == [second.sha256]  # the least recently used one was closed


def test_model_files_are_cached_locally_by_sha256_from_storage(alice, settings, tmp_path):
    settings.INFERENCE_MODEL_CACHE_DIR = tmp_path / "cache"
    version = builders.publish(owner=alice, name="digits", data=builders.digits_onnx())
    path = local_model_path(version_ref(version))
    assert path == tmp_path / "cache" / version.sha256
    assert path.read_bytes() == builders.digits_onnx()


def test_a_file_that_does_not_match_its_sha256_is_refused(alice, settings, tmp_path):
    from inference.runtimes import RuntimeFailure

    settings.INFERENCE_MODEL_CACHE_DIR = tmp_path / "cache"
    version = builders.publish(owner=alice, name="digits", data=builders.digits_onnx())
    version.sha256 = "0" * 64
    with pytest.raises(RuntimeFailure, match="does not match its sha256"):
        local_model_path(version_ref(version))
