"""Pagination of the catalog, shared by the browse page and `GET /api/v1/models`."""

from __future__ import annotations

import hashlib

from django.conf import settings
from django.core.cache import cache
from django.core.paginator import Paginator
from django.utils.functional import cached_property
from rest_framework.pagination import PageNumberPagination


class CatalogPaginator(Paginator):
    """Counting ~100k matching rows costs more than fetching a page, so large counts are cached briefly.

    Small counts (below MODEL_LIST_COUNT_CACHE_MIN) are always exact, so a new upload shows at once in any
    filtered list; only the big unfiltered lists can lag by up to MODEL_LIST_COUNT_CACHE_SECONDS.
    """

    @cached_property
    def count(self) -> int:
        sql, params = self.object_list.order_by().query.sql_with_params()
        key = "catalog-count:" + hashlib.sha256(repr((sql, params)).encode()).hexdigest()
        cached = cache.get(key)
        if cached is not None:
            return cached
        count = self.object_list.count()
        if count >= settings.MODEL_LIST_COUNT_CACHE_MIN:
            cache.set(key, count, settings.MODEL_LIST_COUNT_CACHE_SECONDS)
        return count


class CatalogPagination(PageNumberPagination):
    django_paginator_class = CatalogPaginator
    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100
