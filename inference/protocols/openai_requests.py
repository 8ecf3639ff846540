"""The bodies of the OpenAI-compatible `/v1/` API, checked against an allowlist (API.md, "Generative
models"): a field not listed is refused with a 400 naming it, never passed to the engine, and each value is
checked for type and range. What comes out is the engine's request (`GenerationRequest`), built field by
field."""

from __future__ import annotations

import json

from ..llm.generation import GenerationRequest

SAMPLING_FIELDS = {
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
}
COMMON_FIELDS = {"model", "stream", "stream_options", "user", "n", "response_format", *SAMPLING_FIELDS}
CHAT_FIELDS = COMMON_FIELDS | {"messages", "max_completion_tokens"}
COMPLETION_FIELDS = COMMON_FIELDS | {"prompt"}
EMBEDDING_FIELDS = {"model", "input", "encoding_format", "user"}
ROLES = {"system", "user", "assistant"}
MAX_STOP_SEQUENCES = 4
MAX_SCHEMA_BYTES = 16384
MAX_MESSAGES = 1000


class InvalidRequest(ValueError):
    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.param = param


def parse_body(raw: bytes) -> dict:
    try:
        body = json.loads(raw or b"null")
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    return body


def refuse_unknown(body: dict, allowed: set[str]) -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidRequest(
            f"Unrecognized request argument supplied: {', '.join(unknown)}. Modelport accepts only "
            "the fields its API lists.",
            param=unknown[0],
        )


def model_name(body: dict) -> tuple[str, str]:
    """`owner/name` from the body's `model`."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required: a model's 'owner/name'.", param="model")
    owner, _, name = model.partition("/")
    if not owner or not name or "/" in name:
        raise InvalidRequest(f"'model' must be 'owner/name'; got {model!r}.", param="model")
    return owner, name


def chat_request(body: dict) -> GenerationRequest:
    refuse_unknown(body, CHAT_FIELDS)
    if "max_tokens" in body and "max_completion_tokens" in body:
        raise InvalidRequest("Send max_tokens or max_completion_tokens, not both.", param="max_tokens")
    engine = {"messages": _messages(body.get("messages"))}
    max_tokens = _max_tokens(
        body, "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    )
    engine.update(_sampling(body))
    return GenerationRequest(kind="chat", body=engine, max_tokens=max_tokens)


def completion_request(body: dict) -> GenerationRequest:
    refuse_unknown(body, COMPLETION_FIELDS)
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise InvalidRequest("'prompt' is required: a non-empty string.", param="prompt")
    engine = {"prompt": prompt}
    max_tokens = _max_tokens(body, "max_tokens")
    engine.update(_sampling(body))
    return GenerationRequest(kind="completion", body=engine, max_tokens=max_tokens)


def stream_settings(body: dict) -> tuple[bool, bool]:
    """(stream, include_usage)."""
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be true or false.", param="stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise InvalidRequest(
            "'stream_options' is allowed only when 'stream' is true.", param="stream_options"
        )
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise InvalidRequest("'stream_options' takes only 'include_usage'.", param="stream_options")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise InvalidRequest("'stream_options.include_usage' must be true or false.", param="stream_options")
    return stream, include


def embedding_inputs(body: dict) -> tuple[list[str] | str, str]:
    """The texts (as sent: one string or a list) and the encoding (`float` or `base64`)."""
    refuse_unknown(body, EMBEDDING_FIELDS)
    value = body.get("input")
    if isinstance(value, str):
        if not value:
            raise InvalidRequest("'input' must not be empty.", param="input")
    elif not (isinstance(value, list) and value and all(isinstance(text, str) and text for text in value)):
        raise InvalidRequest(
            "'input' must be a non-empty string or a list of non-empty strings.", param="input"
        )
    encoding = body.get("encoding_format", "float") or "float"
    if encoding not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'.", param="encoding_format")
    return value, encoding


def _messages(value) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise InvalidRequest("'messages' must be a non-empty list of messages.", param="messages")
    if len(value) > MAX_MESSAGES:
        raise InvalidRequest(f"At most {MAX_MESSAGES} messages.", param="messages")
    messages = []
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"'{where}' must be an object with 'role' and 'content'.", param=where)
        unknown = sorted(set(message) - {"role", "content", "name"})
        if unknown:
            raise InvalidRequest(
                f"'{where}' has a field Modelport does not accept: {unknown[0]}.", param=where
            )
        role = message.get("role")
        if role not in ROLES:
            raise InvalidRequest(
                f"'{where}.role' must be one of system, user, assistant; got {role!r}.", param=f"{where}.role"
            )
        messages.append({"role": role, "content": _content(message.get("content"), f"{where}.content")})
    return messages


def _content(value, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        texts = []
        for part in value:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or set(part) != {"type", "text"}
                or not isinstance(part["text"], str)
            ):
                raise InvalidRequest(
                    f'\'{where}\' parts must be {{"type": "text", "text": "…"}}.', param=where
                )
            texts.append(part["text"])
        return "".join(texts)
    raise InvalidRequest(f"'{where}' must be a string or a list of text parts.", param=where)


def _max_tokens(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"'{name}' must be a positive integer.", param=name)
    return value


def _number(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be a number from {low:g} to {high:g}.", param=name)
    return float(value)


def _sampling(body: dict) -> dict:
    n = body.get("n", 1)
    if n != 1 or isinstance(n, bool):
        raise InvalidRequest("Only n=1 is supported.", param="n")
    engine = {}
    for name, low, high in (
        ("temperature", 0, 2),
        ("top_p", 0, 1),
        ("presence_penalty", -2, 2),
        ("frequency_penalty", -2, 2),
    ):
        value = _number(body, name, low, high)
        if value is not None:
            engine[name] = value
    seed = body.get("seed")
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise InvalidRequest("'seed' must be an integer from 0 to 4294967295.", param="seed")
        engine["seed"] = seed
    stop = body.get("stop")
    if stop is not None:
        stops = [stop] if isinstance(stop, str) else stop
        if (
            not isinstance(stops, list)
            or len(stops) > MAX_STOP_SEQUENCES
            or not all(isinstance(s, str) and 0 < len(s) <= 256 for s in stops)
        ):
            raise InvalidRequest("'stop' must be a string or a list of up to 4 strings.", param="stop")
        engine["stop"] = stops
    response_format = _response_format(body.get("response_format"))
    if response_format is not None:
        engine["response_format"] = response_format
    return engine


def _response_format(value) -> dict | None:
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text" and set(value) == {"type"}:
        return None
    if kind == "json_object" and set(value) == {"type"}:
        return {"type": "json_object"}
    if kind == "json_schema" and set(value) == {"type", "json_schema"}:
        spec = value["json_schema"]
        if (
            isinstance(spec, dict)
            and isinstance(spec.get("name"), str)
            and isinstance(spec.get("schema"), dict)
            and not set(spec) - {"name", "schema", "strict", "description"}
        ):
            if len(json.dumps(spec["schema"])) > MAX_SCHEMA_BYTES:
                raise InvalidRequest(
                    f"'response_format.json_schema.schema' is over {MAX_SCHEMA_BYTES} bytes.",
                    param="response_format",
                )
            return {"type": "json_schema", "json_schema": {"schema": spec["schema"]}}
    raise InvalidRequest(
        '\'response_format\' must be {"type": "text"}, {"type": "json_object"} or '
        '{"type": "json_schema", "json_schema": {"name", "schema"}}.',
        param="response_format",
    )
