"""A demo catalog entry: what `demo.py` (tabular, image, chat) and `demo_text.py` (text) hand to seeding."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class DemoModelFailed(Exception):
    pass


@dataclass
class DemoModel:
    name: str
    path: Path
    task: str
    description: str
    tags: list[str]
    labels: list[str]
    preprocessing: dict
    accuracy: float | None
    license: str = "BSD-3-Clause"
    notes: str = "Trained at seed time."
    tokenizer: Path | None = None
    example: str | list | None = None
