"""Decide, for one account, its category, the plugin that handles it and its starting status."""

from __future__ import annotations

from typing import NamedTuple

from portal.models import AccountStatus
from portal.plugins import AccountView, Plugin, PluginRegistry

# Bump when a rule changes, so that a re-import re-classifies rows whose data did not change.
CLASSIFIER_VERSION = "1"
SERVICE_ACCOUNT_CATEGORY = "service_account"
NOT_HANDLED_CATEGORY = "not_handled"


class Classification(NamedTuple):
    category: str
    plugin: str | None
    status: AccountStatus
    reason: str


def classify(account: AccountView, registry: PluginRegistry) -> Classification:
    """Service accounts first (nothing can help them), then the first plugin that claims it."""
    if account.service_account:
        return Classification(
            SERVICE_ACCOUNT_CATEGORY,
            None,
            AccountStatus.UNSUPPORTED,
            "Exchange on-premises service accounts are not supported by Nylas v3",
        )
    found = registry.first_claim(account)
    if found is None:
        return Classification(
            NOT_HANDLED_CATEGORY,
            None,
            AccountStatus.UNSUPPORTED,
            f"no enabled plugin handles provider {account.provider!r}",
        )
    plugin, claim = found
    status = AccountStatus.NEW if claim.needs_reauth else AccountStatus.NOT_REQUIRED
    return Classification(claim.category, plugin.name, status, claim.reason)


def classification_salt(registry: PluginRegistry) -> str:
    """What besides the row decides its classification: the core's rule version and each
    enabled plugin with its declared `rules_version`, so a plugin's bump re-classifies."""
    return f"|v{CLASSIFIER_VERSION}|{','.join(sorted(map(plugin_key, registry)))}"


def plugin_key(plugin: Plugin) -> str:
    # Rules version "1" (the default) is the bare name, so the digests stored before plugins
    # declared a rules version stay valid and an upgrade re-classifies nothing by itself.
    if plugin.rules_version == "1":
        return plugin.name
    return f"{plugin.name}@{plugin.rules_version}"
