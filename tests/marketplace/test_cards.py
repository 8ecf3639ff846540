"""Model cards are Markdown rendered to HTML that cannot run script."""

import pytest

from marketplace.cards import render_card

HOSTILE_CARD = """# Digits

<script>document.title = "owned"</script>

[click me](javascript:alert(1)) and [docs](https://example.com/docs)

<img src="x.png" onerror="alert(2)">

<a href="#" onclick="alert(3)">hi</a>
"""


def test_a_hostile_card_renders_inert():
    html = render_card(HOSTILE_CARD)
    assert "<h1>Digits</h1>" in html
    assert "<script" not in html
    assert "javascript:" not in html
    assert "onerror" not in html
    assert "onclick" not in html
    assert 'href="https://example.com/docs"' in html


@pytest.mark.django_db
def test_the_model_page_shows_the_card_inert(client, publish):
    publish("hostile-card", description=HOSTILE_CARD)
    page = client.get("/models/alice/hostile-card/").content.decode()
    card = page.split('aria-label="Model card"', 1)[1].split("</section>", 1)[0]
    assert "<h1>Digits</h1>" in card
    assert "<script" not in card
    assert "javascript:" not in card
    assert "onerror" not in card
