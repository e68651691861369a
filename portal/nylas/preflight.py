"""Checks to run before any email goes out (`reauth nylas preflight`).

Each check answers pass, fail or warn ("cannot check") with one sentence of detail and one of
fix. docs/nylas-client.md says how each is decided.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.models import Account
from portal.nylas import Connector, NylasError, NylasGateway, NylasNotFound
from portal.nylas.destination import destination_status, portal_webhook_url
from portal.plugins import Plugin, plugin_registry
from portal.scopes import (
    UnknownScopeError,
    is_graph_scope,
    is_legacy_exchange_scope,
    short_graph_name,
    split_scopes,
    translate,
)
from portal.settings import Settings

GRAPH_PLUGINS = ("microsoft-graph", "microsoft-personal")
EWS_PLUGIN = "ews-password"
NYLAS_HOST = re.compile(r"^api(?:\.(?P<region>[a-z]+))?\.nylas\.com$")
AZURE_APP_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
NIL_GUID = "00000000-0000-0000-0000-000000000000"
PASS, FAIL, WARN = "pass", "fail", "warn"


@dataclass(frozen=True)
class Check:
    """One preflight answer. `ok` is False only for failures; a warning is not a pass."""

    name: str
    status: str
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        return self.status != FAIL

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


@dataclass
class PreflightReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [check.as_dict() for check in self.checks]}


@dataclass(frozen=True)
class Connectors:
    """The connectors preflight looks at, by provider; a provider maps to None when it has no
    connector. `error` is set when Nylas could not say."""

    found: Mapping[str, Connector | None] = field(default_factory=dict)
    error: NylasError | None = None

    @property
    def microsoft(self) -> Connector | None:
        return self.found.get("microsoft")

    @property
    def ews(self) -> Connector | None:
        return self.found.get("ews")


def fetch_connector(gateway: NylasGateway, provider: str) -> Connector | None:
    try:
        return gateway.get_connector(provider)
    except NylasNotFound:
        return None


def fetch_connectors(gateway: NylasGateway, providers: Iterable[str]) -> Connectors:
    try:
        return Connectors({provider: fetch_connector(gateway, provider) for provider in providers})
    except NylasError as exc:
        return Connectors({}, exc)


def plugin_providers(plugins: Iterable[Plugin]) -> list[str]:
    """Every Nylas provider the plugins use, each once, in the plugins' order."""
    return list(dict.fromkeys(provider for plugin in plugins for provider in plugin.providers()))


def plugins_in_use(session: Session) -> set[str]:
    rows = session.scalars(select(Account.plugin).where(Account.plugin.is_not(None)).distinct())
    return {name for name in rows if name}


def v2_scopes(session: Session) -> set[str]:
    """The union of the scopes the imported Graph/personal accounts had in v2."""
    rows = session.scalars(
        select(Account.scopes)
        .where(Account.plugin.in_(GRAPH_PLUGINS), Account.scopes.is_not(None))
        .distinct()
    )
    return {scope for text in rows for scope in split_scopes(text)}


def required_graph_scopes(scopes: Iterable[str]) -> tuple[set[str], set[str]]:
    """Graph scopes the connector must grant, and the v2 scopes that mean nothing to Graph."""
    required: set[str] = set(translate([]))
    unknown: set[str] = set()
    for scope in scopes:
        try:
            required.update(translate([scope], with_baseline=False))
        except UnknownScopeError:
            unknown.add(scope)
    return required, unknown


def covers(granted: set[str], wanted: str) -> bool:
    """Graph scopes compare case-insensitively; X.ReadWrite includes X.Read."""
    lowered = {scope.lower() for scope in granted}
    wanted = wanted.lower()
    return wanted in lowered or wanted.replace(".read", ".readwrite", 1) in lowered


def connector_scopes(connector: Connector) -> set[str]:
    return {short_graph_name(scope) for scope in connector.scope or []}


def unconfigured_reason(connector: Connector, nylas_client_id: str) -> str | None:
    """Why the Microsoft connector does not point at a real Azure app, or None when it does."""
    client_id = str((connector.settings or {}).get("client_id") or "").strip()
    if not client_id:
        return "it has no Azure client_id (the import left it unconfigured)"
    if client_id in (NIL_GUID, nylas_client_id):
        return f"its client_id {client_id} is a placeholder, not an Azure application id"
    if not AZURE_APP_ID.match(client_id):
        return f"its client_id {client_id!r} is not an Azure application (client) id"
    return None


def no_connector(name: str, found: Connectors) -> Check:
    if found.error:
        return Check(name, FAIL, "not checked: Nylas could not be asked", api_fix(found.error))
    return Check(name, FAIL, "not checked: there is no Microsoft connector", "Create it first.")


def check_microsoft_connector(found: Connectors, settings: Settings) -> Check:
    name = "microsoft_connector"
    if found.error:
        return Check(name, FAIL, f"Nylas could not be asked: {found.error}", api_fix(found.error))
    if found.microsoft is None:
        return Check(
            name,
            FAIL,
            "there is no Microsoft connector",
            "Run `reauth nylas connector set microsoft --client-id <new Azure app id>`: it "
            "creates the connector (the client secret is asked for).",
        )
    reason = unconfigured_reason(found.microsoft, settings.nylas_client_id)
    if reason:
        return Check(
            name,
            FAIL,
            f"the Microsoft connector is not usable: {reason}",
            "Point it at your new Azure app: `reauth nylas connector set microsoft "
            "--client-id <Azure app id> [--tenant common]` (the client secret is asked for).",
        )
    client_id = (found.microsoft.settings or {}).get("client_id")
    return Check(name, PASS, f"the Microsoft connector uses Azure app {client_id}")


def check_graph_scopes(found: Connectors) -> Check:
    name = "microsoft_scopes_are_graph"
    if found.microsoft is None:
        return no_connector(name, found)
    scopes = found.microsoft.scope or []
    bad = sorted(s for s in scopes if is_legacy_exchange_scope(s) or not is_graph_scope(s))
    if not scopes:
        return Check(
            name,
            FAIL,
            "the Microsoft connector lists no scopes",
            "Set the connector's scopes to the Graph scopes of `reauth scopes translate` "
            "(`reauth nylas connector set microsoft --client-id ... --scope ...`).",
        )
    if bad:
        return Check(
            name,
            FAIL,
            f"not Graph scopes: {', '.join(bad)}",
            "Replace them with Graph scopes; see `reauth scopes translate`.",
        )
    return Check(name, PASS, f"{len(scopes)} Graph scopes")


def check_scope_coverage(found: Connectors, session: Session) -> Check:
    name = "microsoft_scopes_cover_v2"
    if found.microsoft is None:
        return no_connector(name, found)
    required, unknown = required_graph_scopes(v2_scopes(session))
    granted = connector_scopes(found.microsoft)
    missing = sorted(scope for scope in required if not covers(granted, scope))
    note = f" (ignored unknown v2 scopes: {', '.join(sorted(unknown))})" if unknown else ""
    if missing:
        return Check(
            name,
            FAIL,
            f"the connector lacks what imported accounts had in v2: {', '.join(missing)}{note}",
            "Add these scopes to the Microsoft connector and to the Azure app's API permissions.",
        )
    return Check(name, PASS, f"covers the {len(required)} Graph scopes the accounts need{note}")


def check_offline_access(found: Connectors) -> Check:
    name = "offline_access"
    if found.microsoft is None:
        return no_connector(name, found)
    if any(s.lower() == "offline_access" for s in connector_scopes(found.microsoft)):
        return Check(name, PASS, "offline_access is requested")
    return Check(
        name,
        FAIL,
        "offline_access is missing, so grants would stop working after an hour",
        "Add offline_access to the Microsoft connector's scopes.",
    )


PROVIDER_NAMES = {"ews": "Exchange (EWS)", "imap": "IMAP", "google": "Google"}


def check_provider_connector(
    provider: str, found: Connectors, plugins: Sequence[Plugin], in_use: set[str]
) -> Check:
    """A non-Microsoft provider's connector must exist once imported accounts need it.

    Microsoft has its own, deeper checks; these providers' connectors have no settings the
    portal could judge (Nylas' IMAP and EWS connectors hold none), so existence is the check.
    """
    name = f"{provider}_connector"
    shown = PROVIDER_NAMES.get(provider, provider)
    users = [plugin.name for plugin in plugins if provider in plugin.providers()]
    if not in_use.intersection(users):
        return Check(name, PASS, f"no imported account needs the {shown} connector")
    if found.error:
        return Check(name, FAIL, f"Nylas could not be asked: {found.error}", api_fix(found.error))
    if found.found.get(provider) is None:
        return Check(
            name,
            FAIL,
            f"accounts of {', '.join(users)} need the {shown} connector but there is none",
            f"Add an {shown} connector in the Nylas dashboard "
            f"(or POST /v3/connectors with provider {provider!r}).",
        )
    return Check(name, PASS, f"the {shown} connector exists")


def plugin_checks(plugin: Plugin) -> list[Check]:
    """The plugin's own preflight checks, named `<plugin>:<label>`; a check that raises fails."""
    checks: list[Check] = []
    for contributed in plugin.preflight_checks():
        name = f"{plugin.name}:{contributed.label}"
        try:
            problem = contributed.run()
        except Exception as exc:  # third-party code: its failure is a failed check, not a crash
            checks.append(Check(name, FAIL, f"the check raised {type(exc).__name__}: {exc}"))
            continue
        if problem:
            checks.append(Check(name, FAIL, problem, f"See the {plugin.name} plugin's docs."))
        else:
            checks.append(Check(name, PASS, "ok"))
    return checks


def check_callback_uri(gateway: NylasGateway, redirect_uri: str) -> Check:
    name = "callback_uri"
    try:
        registered = gateway.list_callback_uris()
    except NylasNotFound:
        return Check(
            name,
            WARN,
            "cannot check: verify in the dashboard (this API does not list callback URIs)",
            f"Make sure {redirect_uri} is a callback URI of the Nylas application.",
        )
    except NylasError as exc:
        return Check(name, FAIL, f"Nylas could not be asked: {exc}", api_fix(exc))
    if redirect_uri in registered:
        return Check(name, PASS, f"{redirect_uri} is registered")
    return Check(
        name,
        FAIL,
        f"{redirect_uri} is not a callback URI of the Nylas application",
        f"Add {redirect_uri} under Hosted authentication > Callback URIs in the dashboard.",
    )


def check_region(api_uri: str, region: str) -> Check:
    name = "region"
    host = urlsplit(api_uri).hostname or ""
    found = NYLAS_HOST.match(host)
    if not found:
        return Check(name, PASS, f"{host} is not a Nylas host (an emulator?); nothing to compare")
    if found["region"] is None:
        return Check(
            name,
            FAIL,
            f"{host} is the Nylas v2 API",
            "Unset REAUTH_NYLAS_API_URI and set REAUTH_NYLAS_REGION to us or eu.",
        )
    if found["region"] != region:
        return Check(
            name,
            FAIL,
            f"the API URI is in region {found['region']} but REAUTH_NYLAS_REGION is {region}",
            "Make REAUTH_NYLAS_REGION match the region of your Nylas v3 application.",
        )
    return Check(name, PASS, f"region {region} matches {host}")


def check_webhook_destination(gateway: NylasGateway, base_url: str) -> Check:
    """The portal's Nylas webhook destination must be `active`: a `failing`, `failed` or paused
    one means grant expiries and completions elsewhere go unnoticed, and Nylas never
    re-activates a `failed` one. None at all is a warning: the portal works without."""
    name = "webhook_destination"
    found = destination_status(gateway, portal_webhook_url(base_url))
    if not found.known:
        return Check(name, FAIL, f"unknown: {found.summary()}", found.fix())
    if not found.registered:
        return Check(name, WARN, f"{found.summary()}, so grant changes are not pushed", found.fix())
    if not found.healthy:
        return Check(name, FAIL, found.summary(), found.fix())
    return Check(name, PASS, found.summary())


def api_fix(error: NylasError) -> str:
    if error.status in (401, 403):
        return "Check REAUTH_NYLAS_API_KEY and that the region matches your Nylas application."
    return "Check REAUTH_NYLAS_API_URI and your network, then run preflight again."


def run_preflight(
    session: Session,
    gateway: NylasGateway,
    settings: Settings,
    plugins: Sequence[Plugin] | None = None,
) -> PreflightReport:
    """Run the checks that concern `plugins` (default: every enabled plugin).

    The Microsoft checks run when one of the plugins uses Nylas' `microsoft` provider; every
    other provider of the plugins gets its connector check; then each plugin's own checks;
    then the checks every deployment needs. Nylas is asked for each connector once.
    """
    if plugins is None:
        plugins = list(plugin_registry())
    providers = plugin_providers(plugins)
    found = fetch_connectors(gateway, providers)
    in_use = plugins_in_use(session)
    steps: list[Callable[[], Check]] = []
    if "microsoft" in providers:
        steps += [
            lambda: check_microsoft_connector(found, settings),
            lambda: check_graph_scopes(found),
            lambda: check_scope_coverage(found, session),
            lambda: check_offline_access(found),
        ]
    steps += [
        partial(check_provider_connector, provider, found, plugins, in_use)
        for provider in providers
        if provider != "microsoft"
    ]
    steps += [
        lambda: check_callback_uri(gateway, settings.oauth_redirect_uri),
        lambda: check_region(settings.nylas_api_uri, settings.nylas_region),
        lambda: check_webhook_destination(gateway, settings.base_url),
    ]
    checks = [step() for step in steps]
    for plugin in plugins:
        checks += plugin_checks(plugin)
    return PreflightReport(checks)


def report_lines(report: PreflightReport) -> list[str]:
    """One line per check, then the fix indented below it when there is one."""
    lines: list[str] = []
    for check in report.checks:
        lines.append(f"{check.status.upper():4}  {check.name}: {check.detail}")
        if check.status != PASS and check.fix:
            lines.append(f"      fix: {check.fix}")
    lines.append("preflight: ok" if report.ok else "preflight: FAILED")
    return lines
