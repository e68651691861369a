"""Render invitation and reminder emails from Jinja2 templates, per plugin with a fallback.

Account data (names, addresses) is only ever passed as template *variables*; nothing from a
user or an import is compiled as a template. HTML templates autoescape, text ones do not.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import (
    BaseLoader,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    select_autoescape,
)

from portal.plugins import Plugin, Wording
from portal.resources import resource_dir
from portal.settings import Settings

EMAIL_KINDS = ("invite", "reminder")
ADMIN_TEMPLATE = "tenant_admin"  # a tenant administrator's consent invitation
REMINDER_PREFIX = "Reminder: "
GENERIC_WORDING = Wording(
    headline="Reconnect your mailbox",
    explanation="We moved to a new connection for your mailbox; it needs you to sign in once.",
    next_step="You will sign in with your email provider.",
    email_subject="Action needed: reconnect your mailbox",
)


@dataclass(frozen=True)
class RenderedEmail:
    """The parts of one email: subject line, plain text and HTML bodies."""

    subject: str
    text: str
    html: str


@lru_cache(maxsize=16)
def mail_environment(plugin_templates: str | None = None) -> Environment:
    """Build the email template environment (separate from Flask's, autoescaping HTML).

    With a plugin's template folder, that folder is searched first, then the portal's, so a
    plugin's `email/<name>/invite.txt` may extend the portal's `email/_layout.html`."""
    loaders: list[BaseLoader] = [FileSystemLoader(str(resource_dir("templates")))]
    if plugin_templates:
        loaders.insert(0, FileSystemLoader(plugin_templates))
    return Environment(
        loader=ChoiceLoader(loaders),
        autoescape=select_autoescape(["html", "xml"]),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


def plugin_template_dir(plugin: Plugin | None) -> str | None:
    """The `templates` folder of the package the plugin class lives in, if it has one.

    Found through the plugin class's own module, so a third-party plugin ships its emails in
    its wheel (docs/plugins.md, "Shipping email templates"). Only a package counts: a plugin
    that is a single top-level module would otherwise share `site-packages/templates`."""
    if plugin is None:
        return None
    module = sys.modules.get(type(plugin).__module__)
    if module is None or not module.__package__ or not getattr(module, "__file__", None):
        return None
    folder = Path(str(module.__file__)).parent / "templates"
    return str(folder) if folder.is_dir() else None


def template_names(kind: str, plugin_name: str | None, extension: str) -> list[str]:
    """List the candidate templates, the plugin's own first, then the generic one."""
    names = [f"email/{kind}.{extension}"]
    if plugin_name:
        names.insert(0, f"email/{plugin_name}/{kind}.{extension}")
    return names


def subject_for(kind: str, wording: Wording) -> str:
    """Return the subject line: the plugin's, prefixed on reminders."""
    if kind == "reminder":
        return REMINDER_PREFIX + wording.email_subject
    return wording.email_subject


def branding(settings: Settings) -> dict[str, Any]:
    """Collect the configured names and contacts every email shows."""
    return {
        "product_name": settings.product_name,
        "company_name": settings.company_name,
        "support_contact": settings.support_contact,
        "logo_url": settings.logo_url,
        "base_url": settings.base_url,
    }


def render_email(
    kind: str,
    *,
    account: Any,
    plugin: Plugin | None,
    link: str,
    expires_at: datetime | None,
    settings: Settings,
) -> RenderedEmail:
    """Render one email of `kind` (invite or reminder) for an account and its link."""
    if kind not in EMAIL_KINDS:
        raise ValueError(f"unknown email kind {kind!r}")
    wording = plugin.wording(account) if plugin is not None else GENERIC_WORDING
    context = {
        **branding(settings),
        "kind": kind,
        "name": account.name or "",
        "email": account.email,
        "link": link,
        "expires_at": expires_at,
        "wording": wording,
        "plugin_name": plugin.display_name if plugin is not None else "",
    }
    plugin_name = plugin.name if plugin is not None else None
    environment = mail_environment(plugin_template_dir(plugin))
    text = environment.select_template(template_names(kind, plugin_name, "txt")).render(context)
    html = environment.select_template(template_names(kind, plugin_name, "html")).render(context)
    return RenderedEmail(subject=subject_for(kind, wording), text=text, html=html)


def render_admin_email(
    tenant: Any,
    *,
    link: str,
    permissions: list[str],
    reminder: bool,
    settings: Settings,
) -> RenderedEmail:
    """Render a tenant administrator's invitation to approve the app for the organisation."""
    organisation = tenant.name or tenant.tenant
    context = {
        **branding(settings),
        "organisation": organisation,
        "tenant": tenant.tenant,
        "link": link,
        "permissions": permissions,
    }
    environment = mail_environment()
    text = environment.get_template(f"email/{ADMIN_TEMPLATE}.txt").render(context)
    html = environment.get_template(f"email/{ADMIN_TEMPLATE}.html").render(context)
    subject = f"Approval needed: {settings.product_name} for {organisation}"
    return RenderedEmail(REMINDER_PREFIX + subject if reminder else subject, text, html)
