"""The ONNX project's backend node tests, through upload, /api/v1 (OIP form) and /v2 (JSON) of a live server.

The cases come from the installed `onnx` wheel (`onnx.backend.test.case.node`): a model and its inputs and
expected outputs each. Kept are those with tensor inputs and outputs of OIP datatypes that raw ONNX Runtime
passes, so every failure here is Modelport's. Each kept model is uploaded through `POST /api/v1/models` of the
live server, without an `example`, so the worker's sandbox validates it as it would any user's upload
(synthetic trial inputs included); the uploads run in parallel, since validation is a child process per
model. Then the case's inputs go to both prediction APIs from a thread pool, and the outputs are compared as
ONNX's backend test runner compares them (shape, datatype, `assert_allclose` with the case's rtol and atol).
"""

from __future__ import annotations

import json
import time
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import onnxruntime
import pytest
import requests
from onnx import TensorProto

from portal.models import ApiKey
from portal.services import quota_set

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

OIP_DATATYPES = {
    TensorProto.BOOL: "BOOL",
    TensorProto.UINT8: "UINT8",
    TensorProto.UINT16: "UINT16",
    TensorProto.UINT32: "UINT32",
    TensorProto.UINT64: "UINT64",
    TensorProto.INT8: "INT8",
    TensorProto.INT16: "INT16",
    TensorProto.INT32: "INT32",
    TensorProto.INT64: "INT64",
    TensorProto.FLOAT16: "FP16",
    TensorProto.FLOAT: "FP32",
    TensorProto.DOUBLE: "FP64",
    TensorProto.STRING: "BYTES",
}
NUMPY_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "object": "BYTES",
}
REQUIRED_PASS_RATE = 0.99
# Uploads wait on the worker's sandbox (2 processes); predictions on gunicorn's 2 x 8 threads.
UPLOAD_THREADS = 8
PREDICT_THREADS = 12


@dataclass
class NodeCase:
    name: str
    model: bytes
    input_names: list[str]
    output_names: list[str]
    inputs: list[np.ndarray]
    outputs: list[np.ndarray]
    rtol: float
    atol: float


def tensor_only_of_oip_types(model) -> bool:
    values = [*model.graph.input, *model.graph.output]
    return all(
        value.type.WhichOneof("value") == "tensor_type" and value.type.tensor_type.elem_type in OIP_DATATYPES
        for value in values
    )


def same_outputs(expected: list[np.ndarray], got: list[np.ndarray], *, rtol: float, atol: float) -> None:
    """ONNX's `BackendTest.assert_similar_outputs` for tensors: raises AssertionError on a mismatch."""
    np.testing.assert_equal(len(got), len(expected))
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_array_equal(have.shape, want.shape, err_msg="incorrect shape")
        if want.dtype == object:
            np.testing.assert_array_equal(as_text(have), as_text(want))
        else:
            np.testing.assert_equal(have.dtype, want.dtype)
            np.testing.assert_allclose(have, want, rtol=rtol, atol=atol)


def raw_runtime_passes(case) -> bool:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    try:
        session = onnxruntime.InferenceSession(case.model.SerializeToString(), options)
        for inputs, outputs in case.data_sets:
            feed = {arg.name: array for arg, array in zip(session.get_inputs(), inputs, strict=False)}
            same_outputs(list(outputs), session.run(None, feed), rtol=case.rtol, atol=case.atol)
    except Exception:  # noqa: BLE001 - any failure of the runtime itself puts the case out of scope
        return False
    return True


def kept_node_cases() -> tuple[list[NodeCase], int]:
    """(the cases in scope, how many the wheel has)."""
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the case generators compute their expectations with numpy
        cases = collect_testcases()
    kept = []
    for case in cases:
        if case.model is None or not tensor_only_of_oip_types(case.model) or not raw_runtime_passes(case):
            continue
        (inputs, outputs), *_ = case.data_sets
        kept.append(
            NodeCase(
                name=case.name,
                model=case.model.SerializeToString(),
                input_names=[value.name for value in case.model.graph.input][: len(inputs)],
                output_names=[value.name for value in case.model.graph.output],
                inputs=list(inputs),
                outputs=list(outputs),
                rtol=case.rtol,
                atol=case.atol,
            )
        )
    return kept, len(cases)


def as_text(array: np.ndarray) -> np.ndarray:
    """BYTES tensors as str: the cases hold str or bytes, JSON carries str."""
    text = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in array.ravel()]
    return np.array(text, dtype=object).reshape(array.shape)


def json_values(array: np.ndarray) -> list:
    """Flat, row-major JSON values; non-finite floats become NaN / Infinity literals through json.dumps."""
    flat = array.ravel()
    return as_text(flat).tolist() if array.dtype == object else flat.tolist()


def oip_tensors(case: NodeCase) -> list[dict]:
    return [
        {
            "name": name,
            "datatype": NUMPY_DATATYPES[array.dtype.name],
            "shape": list(array.shape),
            "data": json_values(array),
        }
        for name, array in zip(case.input_names, case.inputs, strict=True)
    ]


def arrays_from(outputs: list[dict], case: NodeCase) -> list[np.ndarray]:
    """The answer's tensors in the case's output order, as numpy arrays of the datatype they claim."""
    by_name = {output["name"]: output for output in outputs}
    arrays = []
    for name, want in zip(case.output_names, case.outputs, strict=True):
        if name not in by_name:
            raise AssertionError(f"output {name!r} missing from the answer")
        output = by_name[name]
        claimed = output["datatype"]
        expected = NUMPY_DATATYPES[want.dtype.name]
        if claimed != expected:
            raise AssertionError(f"output {name!r} is {claimed}, expected {expected}")
        data = output["data"]
        if want.dtype == object:
            array = as_text(np.array(data, dtype=object))
        else:
            array = np.array(data, dtype=want.dtype)
        arrays.append(array.reshape(output["shape"]))
    return arrays


# --- the live server ----------------------------------------------------------------------------------------


@dataclass
class Outcome:
    case: str
    ok: bool
    reason: str = ""


def short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def upload(session: requests.Session, base: str, case: NodeCase) -> Outcome:
    """POST /api/v1/models, then (on a 202) poll the version until validation has a verdict."""
    response = session.post(
        f"{base}/api/v1/models",
        data={"name": case.name},
        files={"file": (f"{case.name}.onnx", case.model, "application/octet-stream")},
        timeout=180,
    )
    if response.status_code == 202:
        url = response.json()["url"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            version = session.get(url, timeout=30).json()
            if version["status"] != "validating":
                ok = version["status"] == "ready"
                return Outcome(case.name, ok, "" if ok else f"upload rejected: {short(version['reason'])}")
            time.sleep(0.5)
        return Outcome(case.name, False, "upload still validating after 120 s")
    if response.status_code != 201:
        return Outcome(case.name, False, f"upload {response.status_code}: {short(response.text)}")
    return Outcome(case.name, True)


def predict(session: requests.Session, url: str, case: NodeCase) -> Outcome:
    # json.dumps writes NaN and ±Infinity as literals, as the contract says clients may.
    body = json.dumps({"inputs": oip_tensors(case)})
    try:
        response = session.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=120)
    except requests.RequestException as exc:
        return Outcome(case.name, False, f"request failed: {short(exc)}")
    if response.status_code != 200:
        return Outcome(case.name, False, f"{response.status_code}: {short(response.text)}")
    try:
        got = arrays_from(json.loads(response.text)["outputs"], case)
        same_outputs(case.outputs, got, rtol=case.rtol, atol=case.atol)
    except (AssertionError, ValueError, TypeError, KeyError) as exc:
        return Outcome(case.name, False, f"wrong outputs: {short(exc)}")
    return Outcome(case.name, True)


def keyed_session(key: str, threads: int) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    adapter = requests.adapters.HTTPAdapter(pool_connections=threads, pool_maxsize=threads)
    session.mount("http://", adapter)
    return session


def report(title: str, outcomes: list[Outcome]) -> int:
    passed = sum(o.ok for o in outcomes)
    print(f"\n{title}: {passed} of {len(outcomes)} passed ({passed / max(len(outcomes), 1):.1%})")
    for outcome in outcomes:
        if not outcome.ok:
            print(f"  {outcome.case}: {outcome.reason}")
    return passed


@pytest.mark.timeout(1200)
def test_the_onnx_node_suite_passes_through_upload_and_both_apis(live_web, celery_worker_process, alice):
    started = time.monotonic()
    cases, collected = kept_node_cases()
    print(
        f"\nONNX node tests: {collected} in the wheel, {len(cases)} kept (tensor-only, OIP datatypes, "
        "raw ONNX Runtime passes)"
    )
    # The whole suite is one user's burst: the plan's default rate limits would refuse most of it.
    quota_set(
        user=alice,
        requests_per_minute=1_000_000,
        requests_per_day=10_000_000,
        compute_seconds_per_month=10_000_000,
    )
    key = ApiKey.issue(user=alice, name="node-suite", scopes=["read", "predict", "upload"])[1]

    session = keyed_session(key, max(UPLOAD_THREADS, PREDICT_THREADS))
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        uploads = list(pool.map(lambda case: upload(session, live_web.url, case), cases))
    uploaded_at = time.monotonic()
    published = {o.case for o in uploads if o.ok}
    ready = [case for case in cases if case.name in published]

    def both(case: NodeCase) -> tuple[Outcome, Outcome]:
        model = f"alice/{case.name}"
        return (
            predict(session, f"{live_web.url}/api/v1/models/{model}/predict", case),
            predict(session, f"{live_web.url}/v2/models/{model}/infer", case),
        )

    with ThreadPoolExecutor(PREDICT_THREADS) as pool:
        answers = list(pool.map(both, ready))
    finished = time.monotonic()

    not_uploaded = [o for o in uploads if not o.ok]
    api_v1 = not_uploaded + [a for a, _ in answers]
    v2 = not_uploaded + [b for _, b in answers]
    report("upload", uploads)
    v1_passed = report("/api/v1 predict (OIP form)", api_v1)
    v2_passed = report("/v2 infer (JSON)", v2)
    reasons = Counter(o.reason.split(":")[0] for o in api_v1 + v2 if not o.ok)
    print(f"failure kinds: {dict(reasons)}")
    print(
        f"times: cases {uploaded_at - started:.0f} s to upload (with collection), "
        f"{finished - uploaded_at:.0f} s to predict"
    )

    assert len(cases) > 1000, "the wheel's node tests were not collected"
    assert v1_passed >= REQUIRED_PASS_RATE * len(cases), f"/api/v1: {v1_passed} of {len(cases)}"
    assert v2_passed >= REQUIRED_PASS_RATE * len(cases), f"/v2: {v2_passed} of {len(cases)}"
