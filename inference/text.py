"""Text models on the trusted side of the pipeline: texts become token tensors before `prediction_submit`, and
the outcome's token states become embeddings (feature-extraction) or labels per text (text-classification).

The runners only ever see the int tensors the model's signature asks for: the version's tokenizer.json runs
in a confined child process under a time limit (`marketplace.sandbox.tokenizing`), never on a web thread.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from marketplace import files
from marketplace.models import Task
from marketplace.sandbox.tokenizing import tokenizers
from marketplace.tokenization import TextError, texts_of

from .codec import DATATYPES, TensorError, decode_oip_tensors, top_classes

# The name of the BYTES input that carries texts on /v2 (HTTP and gRPC).
OIP_TEXT_INPUT = "text"
# Extra output on /v2 for feature-extraction: the pooled, normalized vectors (the `embeddings` of /api/v1).
OIP_EMBEDDINGS_OUTPUT = "embeddings"
MAX_TEXTS = 256


@dataclass
class TextRequest:
    """Texts tokenized for one model: the tensors to submit, and what reading the outcome needs."""

    texts: list[str]
    tensors: dict[str, np.ndarray]
    attention_mask: np.ndarray
    single: bool  # one string was sent (not a list): `top` is then that text's list, as for other models


def text_request(target, value) -> TextRequest:
    """A predict body's `text` as the model's token tensors; TextError (a 400) when it cannot be."""
    if not target.takes_text:
        raise TextError("this model takes 'inputs', not 'text' (its version has no tokenizer)")
    texts = texts_of(value)
    if len(texts) > MAX_TEXTS:
        raise TextError(f"at most {MAX_TEXTS} texts per request; {len(texts)} given")
    inputs = target.signature.get("inputs", [])
    tensors, mask = tokenizers().encode(
        # The tokenizer's sha256 names its content (versions are immutable); its configuration depends on
        # the model's inputs.
        key=f"{target.tokenizer_sha256}:{json.dumps(inputs, sort_keys=True)}",
        load=lambda: files.read_bytes(target.tokenizer_name, key=target.tokenizer_key),
        inputs=inputs,
        texts=texts,
    )
    return TextRequest(texts=texts, tensors=tensors, attention_mask=mask, single=isinstance(value, str))


def oip_text_request(described: list, binary, target) -> TextRequest | None:
    """An Open Inference Protocol request with one BYTES input `text` to a model with a tokenizer, tokenized
    (None for every other request, which is decoded against the signature as usual)."""
    texts = texts_from_oip(described, binary, target)
    return None if texts is None else text_request(target, texts)


def with_text_outputs(target, request: TextRequest, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The model's outputs, and for feature-extraction the pooled `embeddings` as one more FP32 output."""
    if target.task != Task.FEATURE_EXTRACTION:
        return outputs
    vectors = embeddings_of(outputs, request.attention_mask)
    return outputs if vectors is None else {**outputs, OIP_EMBEDDINGS_OUTPUT: vectors}


def texts_from_oip(described: list, binary, target) -> list[str] | None:
    """The texts of an Open Inference Protocol request whose one input is a BYTES tensor named `text`, for a
    model with a tokenizer (None for any other request: it is decoded against the signature as usual)."""
    if not target.takes_text or not isinstance(described, list) or len(described) != 1:
        return None
    tensor = described[0]
    if not isinstance(tensor, dict) or tensor.get("name") != OIP_TEXT_INPUT:
        return None
    shape = tensor.get("shape")
    rank = len(shape) if isinstance(shape, list) else 1
    spec = {"inputs": [{"name": OIP_TEXT_INPUT, "datatype": "BYTES", "shape": [-1] * max(rank, 1)}]}
    try:
        array = decode_oip_tensors([tensor], spec, binary)[OIP_TEXT_INPUT]
    except TensorError as exc:
        raise TextError(str(exc)) from None
    try:
        return [item.decode("utf-8") for item in array.ravel().tolist()]
    except UnicodeDecodeError:
        raise TextError("the 'text' input must be UTF-8") from None


# --- reading the outcome ------------------------------------------------------------------------------------


def outcome_arrays(outputs: dict[str, np.ndarray] | None, outputs_json: list | None) -> dict[str, np.ndarray]:
    if outputs is not None:
        return outputs
    arrays = {}
    for output in outputs_json or []:
        if output["datatype"] != "BYTES":
            arrays[output["name"]] = np.asarray(output["data"], dtype=DATATYPES[output["datatype"]]).reshape(
                output["shape"]
            )
    return arrays


def embeddings_of(outputs: dict[str, np.ndarray], attention_mask: np.ndarray) -> np.ndarray | None:
    """One vector per text: the first float output of shape [texts, tokens, hidden] mean-pooled over the
    attention mask and L2-normalized, or a [texts, hidden] output as the model gave it."""
    count = attention_mask.shape[0]
    floats = [a for a in outputs.values() if a.dtype.kind == "f" and a.ndim >= 2 and a.shape[0] == count]
    states = next((a for a in floats if a.ndim == 3 and a.shape[1] == attention_mask.shape[1]), None)
    if states is not None:
        mask = attention_mask.astype(np.float64)[:, :, None]
        summed = (states.astype(np.float64) * mask).sum(axis=1)
        pooled = summed / np.clip(mask.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
    vectors = next((a for a in floats if a.ndim == 2), None)
    return None if vectors is None else vectors.astype(np.float32)


def top_per_text(outputs: dict[str, np.ndarray], labels: list, count: int) -> list[list[dict]] | None:
    """`top_classes` of each text's row of the outputs."""
    if not labels:
        return None
    tops = []
    for row in range(count):
        rows = {name: a[row : row + 1] for name, a in outputs.items() if a.ndim >= 1 and a.shape[0] == count}
        top = top_classes(rows, labels)
        if top is None:
            return None
        tops.append(top)
    return tops


def text_results(target, request: TextRequest, outputs: dict[str, np.ndarray]) -> dict:
    """What a text prediction adds to its answer: `embeddings` or `top` (per text), as the task says."""
    count = len(request.texts)
    if target.task == Task.FEATURE_EXTRACTION:
        vectors = embeddings_of(outputs, request.attention_mask)
        return {} if vectors is None else {"embeddings": vectors.tolist()}
    if target.task == Task.TEXT_CLASSIFICATION:
        tops = top_per_text(outputs, target.labels, count)
        if tops is None:
            return {}
        return {"top": tops[0] if request.single else tops}
    return {}
