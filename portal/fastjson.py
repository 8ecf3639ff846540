"""JSON for the API: orjson's speed with the standard library's reading of the odd cases.

A 3×96×96 image as JSON is half a megabyte; the standard library parses it in about 13 ms, orjson in about 3.
orjson refuses some things the API contract accepts on purpose (the literals NaN, Infinity and -Infinity;
integers past 64 bits): such a body is read again by the standard library, which accepts what it always did.
"""

from __future__ import annotations

import json
import re

import orjson
from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError


def loads(data: bytes | str):
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def dumps(value) -> bytes:
    """Compact JSON. orjson writes NaN and ±Infinity as null, where the API answers the literals (API.md):
    output holding a null is written again by the standard library, which writes a real null the same way,
    as is what orjson refuses."""
    try:
        data = orjson.dumps(value)
    except orjson.JSONEncodeError:  # what orjson does not write (an integer past 64 bits)
        data = b"null"
    if b"null" in data:
        return json.dumps(value, separators=(",", ":")).encode()
    return data


# Where orjson's text may not be the standard library's: an exponent (orjson writes 1e-6 for 1e-06), a small
# number written out (0.000015 for 1.5e-05), NaN or ±Infinity (null), DEL (not escaped), anything not ASCII.
_NOT_AS_STDLIB = re.compile(rb"\de|0\.0000|null|\x7f")


def dumps_as_stdlib(value) -> str:
    """Exactly `json.dumps(value, separators=(",", ":"))` of plain JSON values (dicts with str keys, lists,
    str, int, float, bool, None), by orjson wherever its text is the same: about 20 times faster on floats.
    Found equal on tens of millions of float32 and float64 values."""
    try:
        data = orjson.dumps(value)
    except orjson.JSONEncodeError:  # an integer past 64 bits
        pass
    else:
        if data.isascii() and not _NOT_AS_STDLIB.search(data):
            return data.decode()
    return json.dumps(value, separators=(",", ":"))


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser, reading through `loads`."""

    def parse(self, stream, media_type=None, parser_context=None):
        encoding = (parser_context or {}).get("encoding", settings.DEFAULT_CHARSET)
        try:
            data = stream.read()
            if encoding.lower().replace("-", "") not in ("utf8", "ascii"):
                data = data.decode(encoding)
            return loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ParseError(f"JSON parse error - {exc}") from exc
