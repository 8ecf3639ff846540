"""Model cards: Markdown written by uploaders, rendered to HTML that cannot run script
in a visitor's browser."""

from __future__ import annotations

import markdown
import nh3
from django.utils.safestring import SafeString, mark_safe

CARD_TAGS = {
    "a",
    "abbr",
    "b",
    "blockquote",
    "br",
    "code",
    "dd",
    "del",
    "dl",
    "dt",
    "em",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "i",
    "img",
    "li",
    "ol",
    "p",
    "pre",
    "s",
    "strong",
    "sub",
    "sup",
    "table",
    "tbody",
    "td",
    "th",
    "thead",
    "tr",
    "ul",
}
CARD_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title"},
    "th": {"align"},
    "td": {"align"},
    "code": {"class"},
}


def render_card(text: str) -> SafeString:
    """Markdown to sanitized HTML: only the tags above, http(s)/mailto links only,
    no event handlers or styles.
    """
    html = markdown.markdown(
        text or "", extensions=["fenced_code", "tables", "sane_lists"], output_format="html"
    )
    clean = nh3.clean(
        html,
        tags=CARD_TAGS,
        attributes=CARD_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow ugc",
        strip_comments=True,
    )
    return mark_safe(clean)  # noqa: S308 - nh3 has just removed everything that could run


def card_summary(text: str, limit: int = 140) -> str:
    """The card's first paragraph as one line of plain text (a catalog tile's description)."""
    for block in (text or "").split("\n\n"):
        line = " ".join(block.split())
        if line and not line.startswith(("#", "|", "```", "<", "!", "-", "*")):
            plain = nh3.clean(markdown.markdown(line), tags=set()).strip()
            return plain if len(plain) <= limit else plain[: limit - 1].rsplit(" ", 1)[0] + "…"
    return ""
