"""docs/configuration.md and portal/settings.py are generated from the settings; they must not
drift from them."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from portal.config import DERIVED_SETTINGS, SETTINGS
from portal.config_docs import render, render_settings
from portal.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "configuration.md"


def test_configuration_doc_is_up_to_date() -> None:
    assert DOC.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: run `python -m portal.config_docs > docs/configuration.md`"
    )


def test_every_setting_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [s.name for s in SETTINGS if f"`REAUTH_{s.name}`" not in text]
    assert missing == []


def test_settings_module_is_up_to_date() -> None:
    # The checkout's file, whether the portal is installed editable (the generator writes
    # there) or as a wheel (CI; the installed copy is the same file).
    source = ROOT / "portal" / "settings.py"
    assert source.read_text(encoding="utf-8") == render_settings(), (
        "portal/settings.py is stale: run `python -m portal.config_docs --settings`"
    )


def test_every_setting_is_an_attribute() -> None:
    declared = [s.name.lower() for s in SETTINGS] + [d.name.lower() for d in DERIVED_SETTINGS]
    assert [f.name for f in fields(Settings)] == declared
