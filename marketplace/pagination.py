"""Pagination of the catalog, shared by the browse page and `GET /api/v1/models`.

Page numbers cost an OFFSET: PostgreSQL reads and throws away every row before the page, so page 2,000 of a
million-model catalog took 80 ms. Page numbers therefore reach only the first rows (settings
MODEL_LIST_MAX_PAGED_ROWS on the API, MODEL_BROWSE_MAX_ROWS on the browse page); beyond them the API walks on
with a cursor (keyset pagination on the sort key and id), which costs the same on every page, however deep.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import EmptyResultSet
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import F
from django.db.models.fields.tuple_lookups import Tuple, TupleGreaterThan, TupleLessThan
from django.utils.functional import cached_property
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import BasePagination, PageNumberPagination
from rest_framework.response import Response
from rest_framework.utils.urls import remove_query_param, replace_query_param

INVALID_CURSOR = "Not a valid cursor: use a next or previous link as given."
OTHER_SORT_CURSOR = "This cursor was made for another sort; start again without it."


class CatalogPaginator(Paginator):
    """Counting thousands of matching rows costs more than reading a page, so large counts are cached briefly.

    Small counts (below MODEL_LIST_COUNT_CACHE_MIN) are always exact; a count from that size up can lag by up
    to MODEL_LIST_COUNT_CACHE_SECONDS. The page itself is never cached: a new upload is listed at once.
    With `max_rows`, page numbers stop at the page holding that row (`num_pages` is capped), while `count`
    stays the true total.
    """

    max_rows: int | None = None

    def __init__(self, *args, max_rows: int | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if max_rows is not None:
            self.max_rows = max_rows

    @cached_property
    def count(self) -> int:
        queryset = self.object_list.order_by()
        try:
            sql, params = queryset.query.sql_with_params()
        except EmptyResultSet:  # `.none()`, e.g. an owner filter naming nobody
            return 0
        connection = connections[queryset.db]
        if connection.vendor == "postgresql":
            # The SQL as the server runs it: params such as a tag's Jsonb wrapper have a repr that holds their
            # memory address, which made every tag count a cache miss (issue 18).
            text = connection.ops.compose_sql(sql, params)
        else:
            text = repr((sql, params))
        key = "catalog-count:" + hashlib.sha256(text.encode()).hexdigest()
        cached = cache.get(key)
        if cached is not None:
            return cached
        count = self.object_list.count()
        if count >= settings.MODEL_LIST_COUNT_CACHE_MIN:
            cache.set(key, count, settings.MODEL_LIST_COUNT_CACHE_SECONDS)
        return count

    @cached_property
    def num_pages(self) -> int:
        pages = super().num_pages
        return min(pages, max(1, self.max_rows // self.per_page)) if self.max_rows else pages

    @property
    def numbered_count(self) -> int:
        """How many of the matches page numbers reach."""
        return min(self.count, self.num_pages * self.per_page)

    @property
    def is_capped(self) -> bool:
        """True when matches lie beyond the last page a number reaches."""
        return self.max_rows is not None and self.count > self.num_pages * self.per_page


class ApiCatalogPaginator(CatalogPaginator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, max_rows=settings.MODEL_LIST_MAX_PAGED_ROWS, **kwargs)


class Keyset:
    """A position in a list ordered by (sort key, id), both ascending or both descending (as every sort is).

    The cursor is opaque to clients: base64 of the ordering it was made for and the row it points past, so
    a cursor used with another `sort` is refused rather than silently skipping rows.
    """

    def __init__(self, queryset):
        self.ordering = [str(term) for term in queryset.query.order_by]
        self.fields = [term.lstrip("-") for term in self.ordering]
        self.descending = self.ordering[0].startswith("-")
        model = queryset.model
        self.model_fields = [model._meta.get_field("id" if f == "pk" else f) for f in self.fields]

    def encode(self, row, *, backwards: bool) -> str:
        values = [field.value_to_string(row) for field in self.model_fields]
        payload = {"o": self.ordering, "k": values, "b": backwards}
        return base64.urlsafe_b64encode(json.dumps(payload, separators=(",", ":")).encode()).decode()

    def decode(self, cursor: str) -> tuple[list, bool]:
        """(position, backwards) from a client's cursor; a 400 naming the cursor if it is not one of ours."""
        try:
            payload = json.loads(base64.urlsafe_b64decode(cursor.encode()))
            if payload["o"] != self.ordering:
                raise ValidationError({"cursor": [OTHER_SORT_CURSOR]})
            if not isinstance(payload["k"], list):
                raise TypeError("a cursor position is a list")
            # clean() also range-checks numbers, so a forged cursor is a 400, never a database error.
            values = [field.clean(v, None) for field, v in zip(self.model_fields, payload["k"], strict=True)]
            if any(value is None or "\x00" in str(value) for value in values):
                raise ValueError("a cursor position has neither nulls nor NUL characters")
            return values, bool(payload["b"])
        except (ValueError, TypeError, KeyError, binascii.Error, DjangoValidationError) as exc:
            raise ValidationError({"cursor": [INVALID_CURSOR]}) from exc

    def after(self, queryset, position: list, *, backwards: bool):
        """The rows past `position` in reading order (reversed when walking backwards)."""
        if backwards:
            queryset = queryset.reverse()
        # A row comparison `(key, id) < (x, y)` is one range condition on the (key, id) index, so the page
        # is read straight from where the cursor points; `key < x OR (key = x AND id < y)` would not be.
        lookup = TupleLessThan if self.descending != backwards else TupleGreaterThan
        return queryset.filter(lookup(Tuple(*(F(name) for name in self.fields)), position))


class CatalogCursorPagination(BasePagination):
    """Keyset pagination on the list's own sort: `cursor=` (empty) starts, `next`/`previous` links go on."""

    cursor_query_param = "cursor"

    def __init__(self, page_size: int):
        self.page_size = page_size

    def paginate_queryset(self, queryset, request, view=None):
        self.request = request
        self.keyset = Keyset(queryset)
        self.total = CatalogPaginator(queryset, self.page_size).count
        cursor = request.query_params.get(self.cursor_query_param, "")
        position, backwards = self.keyset.decode(cursor) if cursor else (None, False)
        # The owners come in a second query, not a join: PostgreSQL estimates a row comparison from its first
        # column alone (`downloads < 10` matches nothing, though half the catalog ties at 10), and with that
        # estimate it hashed the join over every row past the cursor, then sorted them (2 s mid-catalog).
        # Without the join the page is read in order from the sort index, whatever the estimate.
        rows = queryset.select_related(None).prefetch_related("owner")
        if position is not None:
            rows = self.keyset.after(rows, position, backwards=backwards)
        rows = list(rows[: self.page_size + 1])
        more = len(rows) > self.page_size
        rows = rows[: self.page_size]
        if backwards:
            rows.reverse()
        # Walking forwards, there is a previous page whenever we started from a cursor; walking backwards,
        # there is a next page (the one we came from).
        has_next = more if not backwards else bool(rows)
        has_previous = (position is not None and bool(rows)) if not backwards else more
        self.next = self.link(rows[-1], backwards=False) if has_next and rows else None
        self.previous = self.link(rows[0], backwards=True) if has_previous and rows else None
        return rows

    def link(self, row, *, backwards: bool) -> str:
        url = remove_query_param(self.request.build_absolute_uri(), "page")
        return replace_query_param(url, self.cursor_query_param, self.keyset.encode(row, backwards=backwards))

    def get_paginated_response(self, data):
        return Response({"count": self.total, "next": self.next, "previous": self.previous, "results": data})


class CatalogPagination(PageNumberPagination):
    """Page numbers (`page`, `page_size`) for the first MODEL_LIST_MAX_PAGED_ROWS rows, a `cursor` anywhere.

    Both answer `{count, next, previous, results}`. The last numbered page's `next` is a cursor link, so a
    client that follows `next` walks the whole catalog without knowing about cursors.
    """

    django_paginator_class = ApiCatalogPaginator
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
    cursor_query_param = "cursor"

    def paginate_queryset(self, queryset, request, view=None):
        page_size = self.get_page_size(request)
        self.cursor_pagination = None
        if self.cursor_query_param in request.query_params:
            self.cursor_pagination = CatalogCursorPagination(page_size)
            return self.cursor_pagination.paginate_queryset(queryset, request, view)
        self.refuse_deep_page(request, page_size)
        return super().paginate_queryset(queryset, request, view)

    def refuse_deep_page(self, request, page_size: int) -> None:
        raw = request.query_params.get(self.page_query_param, "1")
        try:
            number = int(raw)
        except ValueError:
            return  # not a number: PageNumberPagination answers it ("Invalid page")
        limit = settings.MODEL_LIST_MAX_PAGED_ROWS
        if (number - 1) * page_size >= limit:
            raise ValidationError(
                {
                    "page": [
                        f"Page numbers reach the first {limit} models; to go deeper follow `next` "
                        "from the last of those pages, or start a cursor walk with `cursor=`."
                    ]
                }
            )

    def get_paginated_response(self, data):
        if self.cursor_pagination is not None:
            return self.cursor_pagination.get_paginated_response(data)
        return super().get_paginated_response(data)

    def get_next_link(self):
        if not self.page.has_next() and self.page.paginator.is_capped:
            cursor = Keyset(self.page.paginator.object_list).encode(self.page[-1], backwards=False)
            url = remove_query_param(self.request.build_absolute_uri(), self.page_query_param)
            return replace_query_param(url, self.cursor_query_param, cursor)
        return super().get_next_link()

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        parameters.append(
            {
                "name": self.cursor_query_param,
                "required": False,
                "in": "query",
                "description": "Keyset pagination at any depth: empty to start, then the value from `next` "
                "or `previous`. Page numbers reach only the first rows (10000 by default).",
                "schema": {"type": "string"},
            }
        )
        return parameters
