"""reauth-portal: moves Microsoft mailboxes from Nylas API v2 to v3, one signed link at a time."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from flask import Flask

from portal.config import load_settings
from portal.db import db
from portal.extensions import install_settings, settings_of
from portal.plugins import Plugin, PluginRegistry, build_registry, install_registry
from portal.resources import resource_dir
from portal.routing import BaseUrlFlask
from portal.web import init_web

try:  # the one source of the version: the installed distribution's metadata (pyproject.toml)
    __version__ = version("reauth-portal")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"


def instance_folder() -> Path:
    """instance/ under the working directory, unless REAUTH_INSTANCE_PATH says otherwise."""
    return Path(os.environ.get("REAUTH_INSTANCE_PATH", "instance")).resolve()


def create_app(
    config: Mapping[str, Any] | None = None, *, plugins: Sequence[type[Plugin]] | None = None
) -> Flask:
    """Build the portal: configuration, database, plugins, blueprints."""
    app = BaseUrlFlask(
        __name__,
        instance_path=str(instance_folder()),
        template_folder=str(resource_dir("templates")),
        static_folder=str(resource_dir("templates") / "static"),
    )
    app.config.update(load_settings(Path(app.instance_path), config))
    settings = install_settings(app)
    db.init_app(app)
    registry = build_registry(settings.plugins, plugins)
    install_registry(app, registry)
    add_plugin_templates(app, registry)
    init_web(app)
    register_blueprints(app)
    return app


def add_plugin_templates(app: Flask, registry: PluginRegistry) -> None:
    """Let each enabled plugin's own `templates` folder serve its pages and emails.

    The portal's templates are searched first and a plugin's pages live under its own name
    (`reauth/<plugin>/landing.html`), so a plugin can shape its people's pages but can
    neither replace the portal's nor another plugin's (docs/plugins.md, "Shipping pages").
    """
    from jinja2 import ChoiceLoader, FileSystemLoader

    from portal.mail.render import plugin_template_dir

    folders = [folder for plugin in registry if (folder := plugin_template_dir(plugin))]
    if folders and app.jinja_loader is not None:
        loaders = [FileSystemLoader(folder) for folder in folders]
        app.jinja_loader = ChoiceLoader([app.jinja_loader, *loaders])  # type: ignore[method-assign,assignment]


def register_blueprints(app: Flask) -> None:
    from portal.admin import admin_blueprint
    from portal.api import blueprint as api_blueprint
    from portal.views import health, nylas_webhooks, reauth

    app.register_blueprint(health.blueprint)
    app.register_blueprint(reauth.blueprint)
    app.register_blueprint(nylas_webhooks.blueprint)
    app.register_blueprint(admin_blueprint())
    app.register_blueprint(api_blueprint)
    if settings_of(app).demo:  # the captured mailbox exists only in demo mode
        from portal.views import devmail

        app.register_blueprint(devmail.blueprint)
