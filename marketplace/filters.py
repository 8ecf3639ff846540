"""The one FilterSet behind the browse page and `GET /api/v1/models`."""

from __future__ import annotations

import django_filters
from django.contrib.auth import get_user_model
from django.contrib.postgres.search import SearchQuery
from django.db import connection
from django.db.models import Q

from .models import Format, Model, Task

SORTS = {
    "-downloads": ["-downloads", "-id"],
    "-updated": ["-updated_at", "-id"],
    "name": ["name", "id"],
    "-runs": ["-runs", "-id"],
    "-created": ["-created_at", "-id"],
}


def on_postgresql() -> bool:
    return connection.vendor == "postgresql"


class ModelFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="filter_search", label="Search")
    task = django_filters.ChoiceFilter(choices=Task.choices)
    format = django_filters.ChoiceFilter(field_name="latest_format", choices=Format.choices)
    tag = django_filters.CharFilter(method="filter_tag")
    owner = django_filters.CharFilter(method="filter_owner")
    sort = django_filters.ChoiceFilter(
        choices=[(key, key) for key in SORTS], method="filter_sort", empty_label=""
    )

    class Meta:
        model = Model
        fields = ["q", "task", "format", "tag", "owner", "sort"]

    def filter_search(self, queryset, name, value):
        value = value.strip()
        if not value:
            return queryset
        if on_postgresql():
            return queryset.filter(
                search_document=SearchQuery(value, config="english", search_type="websearch")
            )
        return queryset.filter(
            Q(name__icontains=value) | Q(description__icontains=value) | Q(tags__icontains=value)
        )

    def filter_owner(self, queryset, name, value):
        # The owner is looked up first and the models filtered on owner_id, never joined on username: with a
        # join, PostgreSQL walked a whole sort index of the catalog and checked each row's owner (issue 18),
        # while `owner_id = n` is answered from the (owner_id, sort key) indexes at once.
        owner_id = get_user_model().objects.filter(username=value).values_list("pk", flat=True).first()
        if owner_id is None:
            return queryset.none()
        return queryset.filter(owner_id=owner_id)

    def filter_tag(self, queryset, name, value):
        if on_postgresql():
            return queryset.filter(tags__contains=[value])
        return queryset.filter(tags__icontains=f'"{value}"')

    def filter_sort(self, queryset, name, value):
        return queryset.order_by(*SORTS.get(value, SORTS["-downloads"]))

    @property
    def qs(self):
        queryset = super().qs
        if not getattr(self.form, "cleaned_data", {}).get("sort"):
            queryset = queryset.order_by(*SORTS["-downloads"])
        return queryset
