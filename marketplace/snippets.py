"""Code samples on the model page, built from what the model takes: its example, its texts, or a chat.

Every sample reads the API key from the environment variable `KEY_VARIABLE`, which the page and the README
explain. The predict body is the one the try-it widget starts with (the version's example, the tabular example
row, the example texts), so a sample run as written gives the answer the widget gives; the widget replaces the
body in the curl and Python samples with the one it last sent (static/js/snippets.js).
"""

from __future__ import annotations

import json
import math
import shlex

from .models import Model, ModelVersion, Task

KEY_VARIABLE = "MODELPORT_KEY"
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
TEXT_PLACEHOLDER = "Modelport runs models on your own server."


def example_shape(shape: list[int]) -> list[int]:
    return [1 if d == -1 else d for d in shape]


def zeros(shape: list[int], datatype: str):
    value = False if datatype == "BOOL" else "" if datatype == "BYTES" else 0
    for size in reversed(shape):
        value = [value] * size
    return value


def named_example(version: ModelVersion | None) -> dict:
    """The version's example as input name -> nested list, whatever form it came in."""
    example = version.example_inputs if version else None
    if isinstance(example, dict):
        return example
    named = {}
    for tensor in example if isinstance(example, list) else []:
        if not isinstance(tensor, dict):
            return {}
        try:
            named[tensor["name"]] = reshaped(tensor["data"], tensor["shape"])
        except (KeyError, TypeError, ValueError):
            return {}
    return named


def reshaped(flat: list, shape: list[int]):
    if math.prod(shape) != len(flat):
        raise ValueError("data does not fill the shape")
    if not shape:
        return flat[0]
    step = len(flat) // shape[0] if shape[0] else 0
    return [reshaped(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


def example_texts(model: Model, version: ModelVersion) -> str | list[str]:
    """What the text widget sends first: a classifier gets its first text, an encoder all of them."""
    texts = version.example_text or [TEXT_PLACEHOLDER]
    return texts if model.task == Task.FEATURE_EXTRACTION else texts[0]


def example_tensors(model: Model, version: ModelVersion) -> dict:
    """Each input's starting value, as the widget fills it: the tabular example row, the version's example,
    else zeros of the signature's shape."""
    inputs = version.signature.get("inputs", [])
    given = named_example(version)
    row = (model.preprocessing or {}).get("example")
    if model.task.startswith("tabular-") and isinstance(row, list) and len(inputs) == 1 and row:
        given = {inputs[0]["name"]: [row]}
    return {
        spec["name"]: given.get(spec["name"], zeros(example_shape(spec["shape"]), spec["datatype"]))
        for spec in inputs
    }


def predict_body(model: Model, version: ModelVersion) -> dict | None:
    """The body the samples send, or None when it is too large to print (the samples then read a file)."""
    if version.tokenizer:
        return {"text": example_texts(model, version)}
    tensors = example_tensors(model, version)
    sizes = [math.prod(example_shape(spec["shape"])) for spec in version.signature.get("inputs", [])]
    if any(size > INLINE_VALUES_MAX for size in sizes):
        return None
    return {"inputs": tensors}


def python_literal(value) -> str:
    """`value` (JSON data) written as Python source; the JavaScript twin is pythonLiteral in snippets.js."""
    if value is None:
        return "None"
    if value is True:
        return "True"
    if value is False:
        return "False"
    if isinstance(value, float) and not math.isfinite(value):
        return f'float("{value}")'
    if isinstance(value, int | float):
        return json.dumps(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(python_literal(item) for item in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)}: {python_literal(v)}" for k, v in value.items()) + "}"


def result_line(model: Model, version: ModelVersion) -> str:
    if version.tokenizer and model.task == Task.FEATURE_EXTRACTION:
        return 'print([vector[:4] for vector in result["embeddings"]])  # one unit vector per text'
    if model.task.endswith("-classification"):
        return 'print(result.get("top") or result["outputs"])'
    return 'print(result["outputs"])'


def curl_snippet(url: str, body: dict | None, shapes: str) -> tuple[str, str]:
    """The curl sample, and the part of it that is the body (the widget swaps it)."""
    head = (
        f"curl {url} \\\n"
        f'  -H "Authorization: Bearer ${KEY_VARIABLE}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        "  -d "
    )
    if body is None:
        return head + f'@inputs.json   # {{"inputs": {{...}}}} with {shapes}', ""
    return head, shlex.quote(json.dumps(body, ensure_ascii=False))


def requests_snippet(url: str, body: dict | None, printing: str, shapes: str) -> tuple[str, str, str]:
    head = "import os\n\nimport requests\n\nbody = "
    tail = (
        "\nresponse = requests.post(\n"
        f'    "{url}",\n'
        f'    headers={{"Authorization": f"Bearer {{os.environ[\'{KEY_VARIABLE}\']}}"}},\n'
        "    json=body,\n"
        "    timeout=60,\n"
        ")\n"
        "response.raise_for_status()\n"
        "result = response.json()\n"
        f"{printing}"
    )
    if body is None:
        return f'import json\n{head}json.load(open("inputs.json"))  # {shapes}', "", tail
    return head, python_literal(body), tail


def triton_snippet(*, slug: str, base_url: str, model: Model, version: ModelVersion) -> str:
    host = base_url.split("://", 1)[-1]
    if version.tokenizer:
        texts = example_texts(model, version)
        texts = texts if isinstance(texts, list) else [texts]
        tensors = (
            f'text = httpclient.InferInput("text", [{len(texts)}], "BYTES")\n'
            f"text.set_data_from_numpy(np.array({python_literal(texts)}, dtype=np.object_))"
        )
        names = "text"
        outputs = ["embeddings"] if model.task == Task.FEATURE_EXTRACTION else []
        outputs += [spec["name"] for spec in version.signature.get("outputs", [])][:1]
    else:
        inputs = version.signature.get("inputs", [])
        values = example_tensors(model, version)
        lines = []
        for spec in inputs:
            name, shape, dtype = spec["name"], example_shape(spec["shape"]), spec["datatype"]
            if math.prod(shape) <= INLINE_VALUES_MAX:
                array = f"np.array({python_literal(values[name])}, dtype=np.{NUMPY_DTYPES[dtype]})"
            else:
                array = f"np.zeros({shape}, dtype=np.{NUMPY_DTYPES[dtype]})  # your data here"
            variable = python_name(name)
            lines.append(
                f'{variable} = httpclient.InferInput("{name}", {shape}, "{dtype}")\n'
                f"{variable}.set_data_from_numpy({array})"
            )
        tensors = "\n".join(lines)
        names = ", ".join(python_name(spec["name"]) for spec in inputs)
        outputs = [spec["name"] for spec in version.signature.get("outputs", [])]
    prints = "\n".join(f'print(result.as_numpy("{name}"))' for name in outputs)
    return (
        "import os\n\nimport numpy as np\nimport tritonclient.http as httpclient\n\n"
        f'client = httpclient.InferenceServerClient("{host}", ssl={base_url.startswith("https")})\n'
        f'headers = {{"Authorization": f"Bearer {{os.environ[\'{KEY_VARIABLE}\']}}"}}\n'
        f"{tensors}\n"
        f'result = client.infer("{slug}", [{names}], headers=headers)\n'
        f"{prints}"
    )


def python_name(name: str) -> str:
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    return cleaned if cleaned.isidentifier() else f"input_{cleaned}"


def chat_snippets(*, slug: str, base_url: str) -> list[dict]:
    """A text-generation model is called as a chat, with OpenAI's client or plain curl."""
    question = "Say hello in one short sentence."
    body = {"model": slug, "messages": [{"role": "user", "content": question}], "max_tokens": 64}
    curl = (
        f"curl {base_url}/v1/chat/completions \\\n"
        f'  -H "Authorization: Bearer ${KEY_VARIABLE}" \\\n'
        '  -H "Content-Type: application/json" \\\n'
        f"  -d {shlex.quote(json.dumps(body))}"
    )
    openai = (
        "import os\n\nfrom openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{base_url}/v1", api_key=os.environ["{KEY_VARIABLE}"])\n'
        "answer = client.chat.completions.create(\n"
        f'    model="{slug}",\n'
        f'    messages=[{{"role": "user", "content": "{question}"}}],\n'
        "    max_tokens=64,\n"
        ")\n"
        "print(answer.choices[0].message.content)"
    )
    return [
        {"key": "openai", "title": "Python (openai)", "code": openai},
        {"key": "curl", "title": "curl", "code": curl},
    ]


def code_snippets(*, model: Model, version: ModelVersion, base_url: str) -> list[dict]:
    """The samples for the model page, in the order shown: each a dict of key, title and code, where the
    predict samples also split it into head, body and tail around the JSON body the widget may swap."""
    slug = model.slug
    if model.task == Task.TEXT_GENERATION:
        return chat_snippets(slug=slug, base_url=base_url)
    url = f"{base_url}/api/v1/models/{slug}/predict"
    body = predict_body(model, version)
    shapes = ", ".join(
        f"{spec['name']} {example_shape(spec['shape'])}" for spec in version.signature.get("inputs", [])
    )
    curl_head, curl_body = curl_snippet(url, body, shapes)
    py_head, py_body, py_tail = requests_snippet(url, body, result_line(model, version), shapes)
    return [
        {
            "key": "curl",
            "title": "curl",
            "head": curl_head,
            "body": curl_body,
            "tail": "",
            "code": curl_head + curl_body,
        },
        {
            "key": "python",
            "title": "Python (requests)",
            "head": py_head,
            "body": py_body,
            "tail": py_tail,
            "code": py_head + py_body + py_tail,
        },
        {
            "key": "tritonclient",
            "title": "tritonclient (Open Inference Protocol)",
            "code": triton_snippet(slug=slug, base_url=base_url, model=model, version=version),
        },
    ]
