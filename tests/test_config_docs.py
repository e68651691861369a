"""docs/configuration.md is generated from the settings; it must not drift from them."""

from __future__ import annotations

from pathlib import Path

from portal.config import SETTINGS
from portal.config_docs import render

DOC = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_configuration_doc_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run `python -m portal.config_docs > docs/configuration.md`"
    )


def test_every_setting_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [s.name for s in SETTINGS if f"`REAUTH_{s.name}`" not in text]
    assert missing == []
