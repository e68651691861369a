"""The admin side: sign-in and sessions, dashboard, accounts, actions and exports (/admin)."""

from __future__ import annotations

from flask import Blueprint


def admin_blueprint() -> Blueprint:
    """The `admin` blueprint with every route attached (importing the modules registers them)."""
    from portal.admin import actions, filters, pages, tenants, views  # noqa: F401

    return views.blueprint
