"""Deep catalog pages: a cursor on `GET /api/v1/models` beside page numbers, and capped page numbers."""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.management import call_command

from marketplace.models import Format, Model

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalog(alice):
    """Eleven listed models; downloads tie in threes, so a walk must order ties by id to skip none."""
    Model.objects.bulk_create(
        Model(owner=alice, name=f"m{index:02d}", latest_format=Format.ONNX, downloads=10 * (index // 3))
        for index in range(11)
    )


def names(body: dict) -> list[str]:
    return [model["name"] for model in body["results"]]


def forged_cursor(ordering: list[str], position) -> str:
    """A cursor in our format with a position no page of ours points at."""
    payload = {"o": ordering, "k": position, "b": False}
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()


def follow(client, url: str) -> dict:
    return client.get(url).json()


def test_a_cursor_walk_lists_every_model_once_in_page_number_order(client, catalog):
    by_numbers = names(client.get("/api/v1/models?page_size=100").json())
    first = client.get("/api/v1/models?cursor=&page_size=4").json()
    assert set(first) == {"count", "next", "previous", "results"}
    assert first["count"] == 11 and first["previous"] is None
    walked, pages, body = names(first), [first], first
    while body["next"]:
        assert "cursor=" in body["next"] and "page_size=4" in body["next"]
        body = follow(client, body["next"])
        pages.append(body)
        walked += names(body)
    assert walked == by_numbers
    assert [len(page["results"]) for page in pages] == [4, 4, 3]
    back = follow(client, pages[2]["previous"])
    assert names(back) == names(pages[1])
    back = follow(client, back["previous"])
    assert names(back) == names(pages[0]) and back["previous"] is None
    assert names(follow(client, back["next"])) == names(pages[1])


@pytest.mark.parametrize("sort", ["-downloads", "-updated", "name", "-runs", "-created"])
def test_a_cursor_walk_follows_every_sort(client, catalog, sort):
    by_numbers = names(client.get(f"/api/v1/models?page_size=100&sort={sort}").json())
    body = client.get(f"/api/v1/models?cursor=&page_size=3&sort={sort}").json()
    walked = names(body)
    while body["next"]:
        body = follow(client, body["next"])
        walked += names(body)
    assert walked == by_numbers


def test_a_cursor_keeps_the_filters(client, catalog, bob):
    Model.objects.create(owner=bob, name="bobs", latest_format=Format.ONNX, downloads=5)
    body = client.get("/api/v1/models?cursor=&owner=bob").json()
    assert body["count"] == 1 and names(body) == ["bobs"] and body["next"] is None


def test_it_rejects_a_cursor_it_did_not_make(client, catalog):
    response = client.get("/api/v1/models?cursor=not-a-cursor")
    assert response.status_code == 400
    assert "cursor" in response.json()


def test_it_rejects_a_cursor_made_for_another_sort(client, catalog):
    next_link = client.get("/api/v1/models?cursor=&page_size=2&sort=name").json()["next"]
    cursor = parse_qs(urlsplit(next_link).query)["cursor"][0]
    response = client.get("/api/v1/models", {"cursor": cursor, "sort": "-downloads"})
    assert response.status_code == 400
    assert "another sort" in response.json()["cursor"][0]


def test_page_numbers_stop_at_the_cap_and_next_goes_on_with_a_cursor(client, catalog, settings):
    settings.MODEL_LIST_MAX_PAGED_ROWS = 6
    by_numbers = names(client.get("/api/v1/models?cursor=&page_size=100").json())
    last_numbered = client.get("/api/v1/models?page_size=3&page=2").json()
    assert last_numbered["count"] == 11
    assert names(last_numbered) == by_numbers[3:6]
    assert "cursor=" in last_numbered["next"] and "page=" not in last_numbered["next"]
    rest = follow(client, last_numbered["next"])
    assert names(rest) == by_numbers[6:9]

    too_deep = client.get("/api/v1/models?page_size=3&page=3")
    assert too_deep.status_code == 400
    assert "cursor" in too_deep.json()["page"][0]


def test_page_numbers_below_the_cap_keep_their_contract(client, catalog):
    body = client.get("/api/v1/models?page_size=5&page=3").json()
    assert body["count"] == 11 and len(body["results"]) == 1
    assert body["next"] is None and "page=2" in body["previous"]
    assert client.get("/api/v1/models?page=9").status_code == 404  # past the last page, as before


def test_the_browse_page_caps_page_numbers_and_says_so(client, settings):
    settings.MODEL_BROWSE_MAX_ROWS = 40
    call_command("seed_catalog", count=70, owners=2, private_share=0)
    page = client.get("/models/").content.decode()
    assert "Page 1 of 2" in page
    assert "Pages stop at 2, the first 40 of 70 models" in page
    deep = client.get("/models/?page=3").content.decode()
    assert "Page 2 of 2" in deep and 'rel="next"' not in deep


def test_the_browse_page_says_nothing_about_a_cap_it_does_not_reach(client, catalog):
    page = client.get("/models/").content.decode()
    assert "Pages stop" not in page


@pytest.mark.parametrize(
    "position", [["1" + "0" * 30, "1"], ["10", "-5x"], ["10"], "10", [None, "1"], ["10", "1", "2"]]
)
def test_it_rejects_a_forged_cursor_with_a_400(client, catalog, position):
    response = client.get("/api/v1/models", {"cursor": forged_cursor(["-downloads", "-id"], position)})
    assert response.status_code == 400
    assert "cursor" in response.json()


def test_it_rejects_a_forged_name_cursor_with_a_nul_character(client, catalog):
    cursor = forged_cursor(["name", "id"], ["m\x0001", "1"])
    assert client.get("/api/v1/models", {"cursor": cursor, "sort": "name"}).status_code == 400
