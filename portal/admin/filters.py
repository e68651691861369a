"""Jinja filters of the admin pages: times in the admin's time zone, categories in plain words.

Times are stored in UTC. Each page shows them in REAUTH_ADMIN_TIMEZONE ("4 Dec 2026, 14:05
CET"), inside a <time> element whose datetime attribute keeps the exact UTC value.
"""

from __future__ import annotations

from datetime import UTC, datetime
from functools import cache
from zoneinfo import ZoneInfo

from markupsafe import Markup

from portal.admin.views import blueprint
from portal.extensions import current_settings

NO_VALUE = "\u2013"  # an en dash, as the templates print for "none"

# The categories the classification and the built-in plugins decide (docs/classification.md).
# A category a plugin invents and this map lacks is shown by its internal name alone.
CATEGORY_NAMES: dict[str, str] = {
    "graph_ready": "Microsoft 365, already on Graph",
    "graph_consent": "Microsoft 365, old permissions",
    "exchange_onprem": "Exchange on-premises, password",
    "personal": "Outlook.com or Hotmail",
    "service_account": "Exchange service account",
    "not_handled": "No plugin handles it",
}


@cache
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def as_utc(value: datetime) -> datetime:
    """SQLite may hand back naive values; every stored time is UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def iso_utc(value: datetime) -> str:
    return as_utc(value).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def readable_time(value: datetime, zone_name: str) -> str:
    """'4 Dec 2026, 14:05 CET': day without a leading zero, the zone's own abbreviation."""
    local = as_utc(value).astimezone(zone(zone_name))
    return f"{local.day} {local:%b %Y, %H:%M} {local.tzname()}"


def when(value: datetime | None) -> Markup | str:
    """A stored time for a page: readable in the admin's zone, exact in the attribute."""
    if value is None:
        return NO_VALUE
    text = readable_time(value, current_settings().admin_timezone)
    return Markup('<time datetime="{}">{}</time>').format(iso_utc(value), text)


def category_name(category: str | None) -> str:
    """The friendly name and the internal one, e.g. 'Microsoft 365, old permissions
    (graph_consent)'; the internal name alone when there is no friendly one."""
    if not category:
        return NO_VALUE
    friendly = CATEGORY_NAMES.get(category)
    return f"{friendly} ({category})" if friendly else category


blueprint.add_app_template_filter(when, "when")
blueprint.add_app_template_filter(category_name, "category_name")
blueprint.app_context_processor(lambda: {"category_names": CATEGORY_NAMES})
