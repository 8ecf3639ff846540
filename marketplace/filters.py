"""The one FilterSet behind the browse page and `GET /api/v1/models`."""

from __future__ import annotations

import django_filters
from django.contrib.auth import get_user_model
from django.contrib.postgres.search import SearchQuery
from django.db import connection
from django.db.models import Case, Count, IntegerField, Q, Value, When

from .models import Format, Model, Task

SORTS = {
    "-downloads": ["-downloads", "-id"],
    "-updated": ["-updated_at", "-id"],
    "name": ["name", "id"],
    "-runs": ["-runs", "-id"],
    "-created": ["-created_at", "-id"],
}


MAX_SEARCH_WORDS = 8
# How the browse page names tasks and formats (the choices' own labels read "Onnx", "Torchscript").
TASK_LABELS = {
    Task.IMAGE_CLASSIFICATION: "Image classification",
    Task.TABULAR_CLASSIFICATION: "Tabular classification",
    Task.TABULAR_REGRESSION: "Tabular regression",
    Task.TEXT_CLASSIFICATION: "Text classification",
    Task.FEATURE_EXTRACTION: "Feature extraction (embeddings)",
    Task.TEXT_GENERATION: "Text generation (chat)",
    Task.OTHER: "Other",
}
FORMAT_LABELS = {
    Format.ONNX: "ONNX",
    Format.TORCHSCRIPT: "TorchScript",
    Format.TORCH_EXPORT: "torch.export",
    Format.GGUF: "GGUF",
}


def on_postgresql() -> bool:
    return connection.vendor == "postgresql"


def search_words(text: str) -> list[str]:
    """The words of a search box, lower-cased and unique, in order; one-letter words are dropped."""
    words = []
    for word in text.lower().replace(",", " ").split():
        word = word.strip("\"'()")
        if len(word) > 1 and word not in words:
            words.append(word)
    return words[:MAX_SEARCH_WORDS]


def word_matches(word: str) -> Q:
    """A model mentions `word` in its name, card, tags or task (on PostgreSQL, the card and tags through the
    stemmed search document, so "classifiers" finds "classifier")."""
    mentioned = Q(name__icontains=word) | Q(task__icontains=word)
    if on_postgresql():
        return mentioned | Q(search_document=SearchQuery(word, config="english", search_type="plain"))
    return mentioned | Q(description__icontains=word) | Q(tags__icontains=word)


def search_models(queryset, text: str):
    """Models that mention any of the words, with `search_rank`: how many of the words each mentions, plus
    one for each word in its name, so "wine classifier" puts the wine classifier before other classifiers."""
    words = search_words(text)
    if not words:
        return queryset
    anywhere = Q()
    rank = Value(0)
    for word in words:
        matches = word_matches(word)
        anywhere |= matches
        rank = rank + Case(When(matches, then=Value(1)), default=Value(0), output_field=IntegerField())
        rank = rank + Case(
            When(name__icontains=word, then=Value(1)), default=Value(0), output_field=IntegerField()
        )
    return queryset.filter(anywhere).annotate(search_rank=rank)


class ModelFilterSet(django_filters.FilterSet):
    q = django_filters.CharFilter(method="filter_search", label="Search")
    task = django_filters.ChoiceFilter(choices=list(TASK_LABELS.items()), empty_label="Any task")
    format = django_filters.ChoiceFilter(
        field_name="latest_format", choices=list(FORMAT_LABELS.items()), empty_label="Any format"
    )
    tag = django_filters.CharFilter(method="filter_tag")
    owner = django_filters.CharFilter(method="filter_owner")
    sort = django_filters.ChoiceFilter(
        choices=[(key, key) for key in SORTS], method="filter_sort", empty_label=""
    )

    class Meta:
        model = Model
        fields = ["q", "task", "format", "tag", "owner", "sort"]

    def filter_search(self, queryset, name, value):
        return search_models(queryset, value)

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
        chosen = getattr(self.form, "cleaned_data", {})
        if not chosen.get("sort"):
            # A search without a chosen sort lists the best matches first, except when paging by cursor
            # (its keyset walks the sort's own columns).
            ranked = search_words(chosen.get("q") or "") and "cursor" not in self.data
            best_first = ["-search_rank"] if ranked else []
            queryset = queryset.order_by(*best_first, *SORTS["-downloads"])
        return queryset


def facet_counts(data, queryset, *, name: str, field: str) -> dict[str, int]:
    """How many models each value of one filter would list, the other filters as they are."""
    others = data.copy()
    others.pop(name, None)
    matching = ModelFilterSet(others, queryset=queryset).qs.order_by()
    return {row[field]: row["n"] for row in matching.values(field).annotate(n=Count("id"))}


def facet_options(data, queryset) -> dict[str, list[dict]]:
    """The task and format filters' options, each with its label and count, for the browse page."""
    options = {}
    for name, field, labels in (("task", "task", TASK_LABELS), ("format", "latest_format", FORMAT_LABELS)):
        counts = facet_counts(data, queryset, name=name, field=field)
        chosen = data.get(name, "")
        options[name] = [
            {"value": value, "label": label, "count": counts.get(value, 0), "selected": value == chosen}
            for value, label in labels.items()
            if counts.get(value) or value == chosen
        ]
    return options


def filters_to_drop(data) -> list[dict]:
    """For an empty result: each filter in use, and the query string without it."""
    names = {
        "q": "the search",
        "task": "the task",
        "format": "the format",
        "tag": "the tag",
        "owner": "the owner",
    }
    drops = []
    for name, words in names.items():
        if data.get(name):
            rest = data.copy()
            rest.pop(name)
            rest.pop("page", None)
            rest.pop("cursor", None)
            drops.append({"words": f"{words} “{data[name]}”", "query": rest.urlencode()})
    return drops
