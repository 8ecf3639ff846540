"""What the shared cache (Redis) stores: JSON, never a pickle.

django-redis pickles by default, and unpickling runs code: whoever could write one key in Redis would run code
in every web process and worker that read it. JSON is only ever data. A value that is not JSON (a model
instance, a set) fails when it is written, in the code that wrote it; an entry that does not read as JSON (a
planted pickle, a leftover of the old format) is logged and read as a miss: its owner loads and rewrites it.
"""

from __future__ import annotations

import logging

import orjson
from django_redis.serializers.base import BaseSerializer

logger = logging.getLogger(__name__)


class JSONSerializer(BaseSerializer):
    """orjson: datetimes are written as ISO 8601 strings (their owners read them back with `to_python`);
    tuples come back as lists, and dicts must have string keys."""

    def dumps(self, value) -> bytes:
        return orjson.dumps(value)

    def loads(self, value: bytes):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError:
            logger.warning("cache: an entry that is not JSON was read as a miss (%d bytes)", len(value))
            return None
