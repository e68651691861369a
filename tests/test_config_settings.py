"""The typed `Settings`: their values have the declared types, in every environment."""

from __future__ import annotations

import secrets
import types
import typing
from dataclasses import fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from portal.config import SECRET_SETTING_NAMES, load_settings
from portal.extensions import current_settings, install_settings, settings_of
from portal.settings import Settings

PRODUCTION = {
    "ENV": "production",
    "SECRET_KEY": secrets.token_urlsafe(48),
    "NYLAS_API_KEY": "k",
    "NYLAS_CLIENT_ID": "c",
    "BASE_URL": "https://portal.example.com",
}


def conforms(value: Any, annotation: Any) -> bool:
    """isinstance for the annotations Settings uses: unions, Literal, tuple[X, ...], types."""
    origin, arguments = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (types.UnionType, typing.Union):
        return any(conforms(value, argument) for argument in arguments)
    if origin is typing.Literal:
        return value in arguments
    if origin is tuple:
        return isinstance(value, tuple) and all(conforms(item, arguments[0]) for item in value)
    if annotation is type(None):
        return value is None
    if annotation is float:
        return isinstance(value, float)
    return isinstance(value, annotation) and not (annotation is int and isinstance(value, bool))


def wrongly_typed(settings: Settings) -> list[str]:
    hints = typing.get_type_hints(Settings)
    return [
        f"{field.name}={getattr(settings, field.name)!r} is not {hints[field.name]}"
        for field in fields(Settings)
        if not conforms(getattr(settings, field.name), hints[field.name])
    ]


def test_development_defaults_have_the_declared_types(isolated_environment: Path) -> None:
    settings = Settings.from_config(load_settings(isolated_environment))
    assert wrongly_typed(settings) == []
    assert settings.link_max_age == 14 * 24 * 3600
    assert settings.reconcile_grace_seconds == timedelta(seconds=300)
    assert settings.reminder_days == (3, 7, 12)


def test_production_settings_have_the_declared_types(isolated_environment: Path) -> None:
    config = {**PRODUCTION, "DATABASE_URL": f"sqlite:///{isolated_environment / 'p.db'}"}
    settings = Settings.from_config(load_settings(isolated_environment, config))
    assert wrongly_typed(settings) == []
    assert settings.mail_backend == "smtp"
    assert settings.oauth_redirect_uri == "https://portal.example.com/oauth/callback"


def test_every_optional_setting_set_has_the_declared_type(isolated_environment: Path) -> None:
    config = {
        "ENV": "testing",
        "SMTP_USERNAME": "relay",
        "SMTP_PASSWORD": "relay-password",
        "MAIL_REPLY_TO": "help@example.com",
        "APP_WEBHOOK_URL": "https://app.example.com/hook",
        "APP_WEBHOOK_SECRET": "app-secret",
        "SUPPORT_CONTACT": "help@example.com",
        "LOGO_URL": "/static/logo.svg",
        "OIDC_ISSUER": "https://login.example.com",
        "OIDC_CLIENT_ID": "portal",
        "OIDC_CLIENT_SECRET": "oidc-secret",
        "OIDC_ALLOWED": "@example.com",
        "SECRET_KEY_FALLBACKS": "older-key",
        "WORKER_ONCE_DB_PATIENCE": "5",
    }
    settings = Settings.from_config(load_settings(isolated_environment, config))
    assert wrongly_typed(settings) == []
    assert settings.oidc_allowed == ("@example.com",)
    assert settings.worker_once_db_patience == timedelta(seconds=5)


def test_the_repr_names_no_secret(isolated_environment: Path) -> None:
    config = {
        "ENV": "testing",
        "SMTP_PASSWORD": "relay-password",
        "OIDC_CLIENT_SECRET": "oidc-secret-value",
    }
    settings = Settings.from_config(load_settings(isolated_environment, config))
    shown = repr(settings)
    for name in SECRET_SETTING_NAMES:
        value = getattr(settings, name.lower())
        for item in value if isinstance(value, tuple) else [value]:
            if item:
                assert str(item) not in shown, name
    assert "base_url=" in shown


def test_settings_are_frozen(isolated_environment: Path) -> None:
    settings = Settings.from_config(load_settings(isolated_environment, {"ENV": "testing"}))
    with pytest.raises(AttributeError):
        settings.base_url = "https://elsewhere.example.com"  # type: ignore[misc]
    assert replace(settings, demo=True).demo is True


def test_the_app_keeps_one_settings_object(make_app: Any) -> None:
    app: Flask = make_app(PRODUCT_NAME="Contoso reconnect")
    assert settings_of(app).product_name == "Contoso reconnect"
    with app.app_context():
        assert current_settings() is settings_of(app)
    with app.test_request_context("/"):
        assert current_settings() is settings_of(app)


def test_installing_again_reads_a_changed_config(make_app: Any) -> None:
    app: Flask = make_app()
    app.config["NYLAS_WEBHOOK_SECRETS"] = ["rotated"]
    assert settings_of(app).nylas_webhook_secrets == ()
    install_settings(app)
    assert settings_of(app).nylas_webhook_secrets == ("rotated",)
