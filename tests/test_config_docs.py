"""docs/configuration.md and portal/settings.py are generated from the settings; they must not
drift from them."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from portal.config import DERIVED_SETTINGS, SETTINGS
from portal.config_docs import SETTINGS_MODULE, render, render_settings
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
    assert SETTINGS_MODULE == ROOT / "portal" / "settings.py"
    assert SETTINGS_MODULE.read_text(encoding="utf-8") == render_settings(), (
        "portal/settings.py is stale: run `python -m portal.config_docs --settings`"
    )


def test_every_setting_is_an_attribute() -> None:
    declared = [s.name.lower() for s in SETTINGS] + [d.name.lower() for d in DERIVED_SETTINGS]
    assert [f.name for f in fields(Settings)] == declared
