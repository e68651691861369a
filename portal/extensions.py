"""The typed settings an app keeps in `app.extensions`, behind typed accessors.

`create_app` builds `Settings` once from the loaded configuration; code holding the app reads
`settings_of(app)`, code running in an app or request context reads `current_settings()`.
The other extensions have their accessor beside what they hold: `plugin_registry`
(portal.plugins), `session_factory` (portal.db), `current_gateway` (portal.nylas.gateway),
`current_preparer` (portal.mail.prepare).
"""

from __future__ import annotations

from flask import Flask, current_app

from portal.settings import Settings

SETTINGS_KEY = "reauth_settings"


def install_settings(app: Flask) -> Settings:
    """Build the settings from `app.config` and keep them on the app.

    Call it again after changing `app.config` of a running app: the settings are a snapshot.
    """
    settings = app.extensions[SETTINGS_KEY] = Settings.from_config(app.config)
    return settings


def settings_of(app: Flask) -> Settings:
    """The settings of an app made by `create_app`."""
    settings = app.extensions[SETTINGS_KEY]
    assert isinstance(settings, Settings)
    return settings


def current_settings() -> Settings:
    """The settings of the current app (an app or request context must be active)."""
    return settings_of(current_app._get_current_object())  # type: ignore[attr-defined]
