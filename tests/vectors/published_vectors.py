"""The drafts' published examples the vector tests check, kept in the repository
(`tests/vectors/published/`, each file's origin in its `SOURCES.md`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PUBLISHED_DIR = Path(__file__).resolve().parent / "published"


def load_published(name: str) -> Any:
    """The parsed JSON of `published/<name>` (e.g. `wimse-draft-examples.json`)."""
    return json.loads((PUBLISHED_DIR / name).read_text(encoding="utf-8"))
