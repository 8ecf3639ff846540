"""Text into a model's token tensors with a Hugging Face `tokenizer.json`, through the `tokenizers` library.

Django-free: the upload check (in the web process), the sandbox child (`sandbox/inspect_file.py`, the
trial run on the example) and inference's text path all tokenize the same way here. Parsing a
tokenizer.json is not code execution (it is data for the Rust library), but its size is bounded by the
caller.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The inputs of a BERT-style model that the server fills, in the order a model usually declares them.
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Without a truncation setting in the tokenizer or a fixed sequence length in the signature: BERT's maximum.
DEFAULT_MAX_LENGTH = 512
# A text is cut to this many characters before tokenizing: far more than any maximum length in tokens needs,
# and it keeps a megabyte-long text from costing the web process a megabyte of tokenizing.
MAX_CHARACTERS = 100_000
SAMPLE_TEXT = "Modelport checks that this tokenizer loads and encodes a sample sentence."
INTEGER_DTYPES = {"INT64": np.int64, "INT32": np.int32, "INT16": np.int16, "INT8": np.int8, "UINT8": np.uint8}


class TokenizerError(ValueError):
    """The tokenizer.json cannot be used; the message says why (shown to the uploader)."""


class TextError(ValueError):
    """The texts cannot be fed to this model; the message says why (a 400)."""


def tokenizer_load(raw: bytes | str):
    """A `tokenizers.Tokenizer` from the bytes of a tokenizer.json; TokenizerError when it does not load."""
    from tokenizers import Tokenizer

    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return Tokenizer.from_str(text)
    except UnicodeDecodeError:
        raise TokenizerError("The tokenizer is not UTF-8 text (a tokenizer.json is JSON).") from None
    except Exception as exc:  # the Rust library raises its own Exception for every parse error
        raise TokenizerError(f"The tokenizer does not load with `tokenizers`: {first_line(exc)}") from None


def tokenizer_check(raw: bytes) -> str | None:
    """The reason `raw` is not a usable tokenizer.json (it must load and encode a sample), or None."""
    try:
        tokenizer = tokenizer_load(raw)
        encoding = tokenizer.encode(SAMPLE_TEXT)
    except TokenizerError as exc:
        return str(exc)
    except Exception as exc:
        return f"The tokenizer fails to encode a sample sentence: {first_line(exc)}"
    if not encoding.ids:
        return "The tokenizer encodes a sample sentence to no tokens at all."
    return None


def first_line(error, limit: int = 300) -> str:
    text = " ".join(str(error).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class TextPlan:
    """How texts become this model's inputs: which inputs, their types, and the length rules."""

    inputs: tuple[tuple[str, str], ...]  # (name, datatype) of the model inputs the server fills
    max_length: int
    fixed_length: int | None  # the signature's sequence length, when it is not dynamic
    fixed_batch: int | None


def text_plan(tokenizer, input_specs: list[dict]) -> TextPlan:
    """Read the model's text inputs from its signature; TextError if it cannot take text."""
    specs = {spec["name"]: spec for spec in input_specs}
    if "input_ids" not in specs:
        raise TextError(
            f"the model has no `input_ids` input to feed tokens to (its inputs are {list(specs)})"
        )
    others = [name for name in specs if name not in TEXT_INPUTS]
    if others:
        raise TextError(f"the model has inputs the tokenizer cannot fill: {others}")
    for name, spec in specs.items():
        if spec["datatype"] not in INTEGER_DTYPES:
            raise TextError(f"the input {name!r} is {spec['datatype']}; token inputs must be integers")
        if len(spec["shape"]) != 2:
            raise TextError(f"the input {name!r} has shape {spec['shape']}; token inputs are [batch, tokens]")
    batch, length = specs["input_ids"]["shape"]
    fixed_length = length if length > 0 else None
    truncation = tokenizer.truncation or {}
    max_length = fixed_length or int(truncation.get("max_length") or DEFAULT_MAX_LENGTH)
    if fixed_length and truncation.get("max_length"):
        max_length = min(fixed_length, int(truncation["max_length"]))
    return TextPlan(
        inputs=tuple((name, specs[name]["datatype"]) for name in TEXT_INPUTS if name in specs),
        max_length=max_length,
        fixed_length=fixed_length,
        fixed_batch=batch if batch > 0 else None,
    )


def tokenizer_configure(tokenizer, plan: TextPlan):
    """Set padding (to the longest text, or to the model's fixed length) and truncation (to the maximum)."""
    padding = tokenizer.padding or {}
    pad_token = padding.get("pad_token") or next(
        (token for token in ("[PAD]", "<pad>", "<|padding|>") if tokenizer.token_to_id(token) is not None),
        "[PAD]",
    )
    pad_id = padding.get("pad_id")
    if pad_id is None:
        pad_id = tokenizer.token_to_id(pad_token) or 0
    tokenizer.enable_padding(
        direction=padding.get("direction", "right"),
        pad_id=pad_id,
        pad_type_id=padding.get("pad_type_id", 0),
        pad_token=pad_token,
        length=plan.fixed_length,
    )
    truncation = tokenizer.truncation or {}
    tokenizer.enable_truncation(
        max_length=plan.max_length,
        stride=0,
        strategy=truncation.get("strategy", "longest_first"),
        direction=truncation.get("direction", "right"),
    )
    return tokenizer


def texts_of(value) -> list[str]:
    """A predict body's `text`: one string or a non-empty list of strings; TextError otherwise."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        return list(value)
    if isinstance(value, list) and not value:
        raise TextError("'text' is an empty list; send at least one text")
    raise TextError("'text' must be a string or a list of strings")


def encode_texts(tokenizer, plan: TextPlan, texts: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The model's inputs for `texts`, and their attention mask (pooling needs it even when the model takes
    none). `tokenizer` is configured for the plan: see `tokenizer_configure`."""
    if plan.fixed_batch is not None and len(texts) != plan.fixed_batch:
        raise TextError(f"the model takes exactly {plan.fixed_batch} text(s) at a time; {len(texts)} given")
    encodings = tokenizer.encode_batch([text[:MAX_CHARACTERS] for text in texts])
    columns = {
        "input_ids": [e.ids for e in encodings],
        "attention_mask": [e.attention_mask for e in encodings],
        "token_type_ids": [e.type_ids for e in encodings],
    }
    inputs = {
        name: np.asarray(columns[name], dtype=INTEGER_DTYPES[datatype]) for name, datatype in plan.inputs
    }
    return inputs, np.asarray(columns["attention_mask"], dtype=np.int64)
