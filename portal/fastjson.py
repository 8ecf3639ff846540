"""JSON for the API: orjson's speed with the standard library's reading of the odd cases.

A 3×96×96 image as JSON is half a megabyte; the standard library parses it in about 13 ms, orjson in about 3.
orjson refuses some things the API contract accepts on purpose (the literals NaN, Infinity and -Infinity;
integers past 64 bits): such a body is read again by the standard library, which accepts what it always did.
"""

from __future__ import annotations

import json

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
