"""Code samples on the model page, written with the model's real input names, shapes and datatypes."""

from __future__ import annotations

import json
import math

NUMPY_DTYPES = {
    "BOOL": "bool_",
    "UINT8": "uint8",
    "UINT16": "uint16",
    "UINT32": "uint32",
    "UINT64": "uint64",
    "INT8": "int8",
    "INT16": "int16",
    "INT32": "int32",
    "INT64": "int64",
    "FP16": "float16",
    "FP32": "float32",
    "FP64": "float64",
    "BYTES": "object_",
}
INLINE_VALUES_MAX = 256


def example_shape(shape: list[int]) -> list[int]:
    return [1 if d == -1 else d for d in shape]


def zeros(shape: list[int], datatype: str):
    value = False if datatype == "BOOL" else "" if datatype == "BYTES" else 0
    for size in reversed(shape):
        value = [value] * size
    return value


def example_inputs(signature: dict) -> dict:
    return {
        spec["name"]: zeros(example_shape(spec["shape"]), spec["datatype"])
        for spec in signature.get("inputs", [])
    }


def code_snippets(*, slug: str, base_url: str, signature: dict) -> dict[str, str]:
    inputs = signature.get("inputs", [])
    outputs = signature.get("outputs", [])
    small = all(math.prod(example_shape(s["shape"])) <= INLINE_VALUES_MAX for s in inputs)
    body = json.dumps({"inputs": example_inputs(signature)}) if small else None
    predict_url = f"{base_url}/api/v1/models/{slug}/predict"
    if body is not None:
        curl_body = f"  -d '{body}'"
    else:
        shapes = ", ".join(f"{s['name']} {example_shape(s['shape'])}" for s in inputs)
        curl_body = f'  -d @inputs.json   # {{"inputs": {{...}}}} with {shapes}'
    curl = (
        f"curl -X POST {predict_url} \\\n"
        '  -H "Authorization: Bearer $MODELPORT_KEY" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"{curl_body}"
    )
    arrays = "\n".join(
        f"{spec['name']} = np.zeros({example_shape(spec['shape'])}, "
        f"dtype=np.{NUMPY_DTYPES[spec['datatype']]})"
        for spec in inputs
    )
    python = (
        "import os\n\nimport numpy as np\nimport requests\n\n"
        f"{arrays}\n"
        "response = requests.post(\n"
        f'    "{predict_url}",\n'
        '    headers={"Authorization": f"Bearer {os.environ[\'MODELPORT_KEY\']}"},\n'
        '    json={"inputs": {' + ", ".join(f'"{s["name"]}": {s["name"]}.tolist()' for s in inputs) + "}},\n"
        '    timeout=60,\n)\nresponse.raise_for_status()\nprint(response.json()["outputs"])'
    )
    host = base_url.split("://", 1)[-1]
    triton_inputs = "\n".join(
        f'{spec["name"]} = httpclient.InferInput("{spec["name"]}", {example_shape(spec["shape"])}, '
        f'"{spec["datatype"]}")\n'
        f"{spec['name']}.set_data_from_numpy(np.zeros({example_shape(spec['shape'])}, "
        f"dtype=np.{NUMPY_DTYPES[spec['datatype']]}))"
        for spec in inputs
    )
    names = ", ".join(spec["name"] for spec in inputs)
    prints = "\n".join(f'print(result.as_numpy("{spec["name"]}"))' for spec in outputs)
    triton = (
        "import os\n\nimport numpy as np\nimport tritonclient.http as httpclient\n\n"
        f'client = httpclient.InferenceServerClient("{host}", ssl={base_url.startswith("https")})\n'
        'headers = {"Authorization": f"Bearer {os.environ[\'MODELPORT_KEY\']}"}\n'
        f"{triton_inputs}\n"
        f'result = client.infer("{slug}", [{names}], headers=headers)\n'
        f"{prints}"
    )
    return {"curl": curl, "python": python, "tritonclient": triton}
