"""`reauth nylas connector set` and `reauth nylas credentials add|list|remove`.

The connector points Nylas at the company's Azure app (seed step 8 of docs/deploy.md); the
credentials are other Azure apps for one tenant (`connector`) or the App-Permissions app a
tenant's administrator approves (`adminconsent`), recorded here as tenant -> credential id.
Client secrets come from a hidden prompt or stdin, are sent to Nylas and nowhere else: never
an argument (it would sit in shell history and `ps`), never printed, logged or stored here.
docs/deploy.md, "Connector and credentials", says what each command decides.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import click
from flask.cli import with_appcontext
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from portal.accounts.history import record_event
from portal.db import begin_writer, db
from portal.extensions import current_settings
from portal.models import Account, CredentialType, TenantCredential, utcnow
from portal.nylas import (
    Connector,
    Credential,
    NylasError,
    NylasGateway,
    NylasNotFound,
    current_gateway,
)
from portal.nylas.preflight import AZURE_APP_ID, required_graph_scopes, run_preflight, v2_scopes
from portal.nylas.preflight import report_lines as preflight_lines
from portal.scopes import split_scopes

ACTOR = "cli"
# The Microsoft connector's `tenant` setting: a tenant id or domain, or one of Azure's
# audiences (`common`: work and personal accounts, which this migration needs for C4).
AZURE_AUDIENCES = frozenset({"common", "organizations", "consumers"})
DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
GOOGLE_CLIENT_ID = re.compile(r"^[0-9]+-[0-9a-z]+\.apps\.googleusercontent\.com$")
# Settings Nylas keeps but never serves back; everything else it shows is sent back as it
# was, because a PATCH replaces `settings` as a whole.
SECRET_SETTINGS = ("client_secret",)


@dataclass(frozen=True)
class ProviderRules:
    """What `connector set` accepts for one provider's OAuth app."""

    label: str  # the app's name where the client id is copied from
    client_id: re.Pattern[str]
    client_id_hint: str
    has_tenant: bool


PROVIDERS: dict[str, ProviderRules] = {
    "microsoft": ProviderRules(
        "Azure app",
        AZURE_APP_ID,
        "an Azure application (client) id is a GUID such as "
        "6731de76-14a6-49ae-97bc-6eba6914391e (App registrations > Overview)",
        has_tenant=True,
    ),
    "google": ProviderRules(
        "Google Cloud OAuth client",
        GOOGLE_CLIENT_ID,
        "a Google OAuth client id ends in .apps.googleusercontent.com",
        has_tenant=False,
    ),
}
CREDENTIAL_PROVIDERS = ("microsoft",)  # tenants and admin consent are Azure's


# -- reading and checking input -------------------------------------------------------------


def read_secret(label: str) -> str:
    """A hidden prompt on a terminal, else the first line of stdin (a pipe or a file)."""
    if sys.stdin.isatty():
        value = str(click.prompt(label, hide_input=True, default="", show_default=False))
    else:
        value = sys.stdin.readline()
    secret = value.strip()
    if not secret:
        raise click.ClickException(f"no {label.lower()} was given; nothing was changed")
    if AZURE_APP_ID.match(secret):
        # Azure shows a secret's Value once and its Secret ID beside it; the ID is a GUID.
        raise click.ClickException(
            f"that {label.lower()} is a GUID: the Secret ID, not the secret. Copy the Value "
            "column (Certificates & secrets) instead; nothing was changed"
        )
    return secret


def check_client_id(provider: str, client_id: str) -> str:
    rules = PROVIDERS[provider]
    value = client_id.strip()
    if not rules.client_id.match(value):
        raise click.BadParameter(
            f"{value!r} is not a valid {rules.label} client id: {rules.client_id_hint}",
            param_hint="--client-id",
        )
    return value.lower() if provider == "microsoft" else value


def normalize_tenant(value: str, *, audiences: bool = False) -> str:
    """A tenant id (GUID) or verified domain, lower case as accounts' `tenant` is stored."""
    tenant = value.strip().lower()
    if AZURE_APP_ID.match(tenant) or DOMAIN.match(tenant):
        return tenant
    if audiences and tenant in AZURE_AUDIENCES:
        return tenant
    allowed = "a tenant id (GUID) or a verified domain such as contoso.com"
    if audiences:
        allowed += f", or {', '.join(sorted(AZURE_AUDIENCES))}"
    raise click.BadParameter(f"{value!r} is not {allowed}", param_hint="--tenant")


def start_writing(session: Session) -> None:
    """End any read transaction, then take the write lock before re-reading: nothing is held
    open across Nylas calls or a prompt, and a row changed meanwhile is seen (SQLite cannot
    upgrade a read transaction that another process wrote behind)."""
    session.rollback()
    begin_writer(session)


class Conflict(Exception):
    """Another process changed the tenant's record while this one talked to Nylas."""


def nylas_failed(exc: NylasError, what: str = "nothing was changed") -> click.ClickException:
    """One line: what Nylas said, its status and request id, and what that left behind."""
    return click.ClickException(f"Nylas: {exc}; {what}")


# -- connector set: the plan -------------------------------------------------------------------


@dataclass
class ConnectorPlan:
    """What `connector set` will send, and the lines that say so (no secret in either)."""

    provider: str
    create: bool
    settings: dict[str, Any] | None  # None: settings untouched; else sent whole, with a secret
    scope: list[str] | None  # None: scopes untouched
    lines: list[str] = field(default_factory=list)
    changed: dict[str, list[Any]] = field(default_factory=dict)

    @property
    def needs_secret(self) -> bool:
        return self.settings is not None

    @property
    def anything(self) -> bool:
        return self.create or self.settings is not None or self.scope is not None


def public_settings(connector: Connector | None) -> dict[str, Any]:
    settings = dict((connector.settings if connector else None) or {})
    return {k: v for k, v in settings.items() if k not in SECRET_SETTINGS and v is not None}


def same_scopes(left: Iterable[str], right: Iterable[str]) -> bool:
    """Graph scope names compare without case, and their order means nothing to Nylas."""
    return {s.lower() for s in left} == {s.lower() for s in right}


def plan_connector(
    provider: str,
    connector: Connector | None,
    *,
    client_id: str,
    tenant: str | None,
    scopes: list[str] | None,
    default_scopes: list[str],
    rotate_secret: bool,
) -> ConnectorPlan:
    """Compare what Nylas shows with what was asked for; the secret is never comparable."""
    before = public_settings(connector)
    wanted = {**before, "client_id": client_id}
    if tenant is not None:
        wanted["tenant"] = tenant
    plan = ConnectorPlan(provider, create=connector is None, settings=None, scope=None)
    for key, label in (("client_id", "client id"), ("tenant", "tenant")):
        old, new = before.get(key), wanted.get(key)
        if key == "tenant" and not PROVIDERS[provider].has_tenant:
            continue
        if old != new:
            plan.changed[key] = [old, new]
            plan.lines.append(f"{label}: {old or '(none)'} -> {new or '(none)'}")
        else:
            plan.lines.append(f"{label}: {new or '(none)'} (unchanged)")
    if plan.create or plan.changed or rotate_secret:
        plan.settings = wanted
        why = "new" if plan.create else "replaced"
        plan.lines.append(f"client secret: {why} (not shown; Nylas never serves it back)")
    else:
        plan.lines.append("client secret: kept (run with --rotate-secret to replace it)")
    current_scope = list((connector.scope if connector else None) or [])
    target = scopes if scopes is not None else (default_scopes if plan.create else None)
    if target is not None and (plan.create or not same_scopes(current_scope, target)):
        plan.scope = target
        plan.changed["scope"] = [current_scope, target]
        plan.lines.append(f"scope: {' '.join(current_scope) or '(none)'} -> {' '.join(target)}")
    else:
        plan.lines.append(f"scope: {' '.join(current_scope) or '(none)'} (unchanged)")
    return plan


def default_scopes(session: Session, provider: str) -> list[str]:
    """For a connector created here: the Graph scopes the imported accounts need (what
    preflight checks for), or none for other providers (Nylas' own defaults)."""
    if provider != "microsoft":
        return []
    required, _unknown = required_graph_scopes(v2_scopes(session))
    return sorted(required, key=str.lower)


def fetch_connector(gateway: NylasGateway, provider: str) -> Connector | None:
    try:
        return gateway.get_connector(provider)
    except NylasNotFound:
        return None
    except NylasError as exc:
        raise nylas_failed(exc) from None


def apply_plan(gateway: NylasGateway, plan: ConnectorPlan, secret: str | None) -> None:
    settings = {**plan.settings, "client_secret": secret} if plan.settings is not None else None
    try:
        if plan.create:
            gateway.create_connector(plan.provider, settings=settings, scope=plan.scope)
        else:
            gateway.update_connector(plan.provider, settings=settings, scope=plan.scope)
    except NylasError as exc:
        raise nylas_failed(exc) from None


def show_preflight(session: Session, gateway: NylasGateway) -> bool:
    click.echo("")
    report = run_preflight(session, gateway, current_settings())
    for line in preflight_lines(report):
        click.echo(line)
    return report.ok


@click.group("connector")
def connector_group() -> None:
    """The connector that points Nylas at the company's OAuth app (the new Azure app)."""


@connector_group.command("set")
@click.argument("provider", type=click.Choice(sorted(PROVIDERS)))
@click.option("--client-id", required=True, help="The app's client id (Azure: a GUID).")
@click.option(
    "--tenant",
    help="Microsoft only: the Azure tenant the app signs in (id or domain), or common.",
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    help="Default scopes (repeat, or space/comma separated); replaces the connector's list.",
)
@click.option("--rotate-secret", is_flag=True, help="Replace the client secret, ids unchanged.")
@with_appcontext
def connector_set_command(
    provider: str,
    client_id: str,
    tenant: str | None,
    scopes: Sequence[str],
    rotate_secret: bool,
) -> None:
    """Point the PROVIDER connector at an OAuth app, then run the preflight checks.

    The client secret is read from a hidden prompt, or from the first line of stdin when that
    is not a terminal, and only when something changes: the client id or tenant (Nylas then
    replaces the settings as a whole, secret included), a connector created here, or
    --rotate-secret. Run twice with the same values, the second run changes nothing.
    A connector that does not exist is created. Exits 1 when preflight fails.
    """
    client_id = check_client_id(provider, client_id)
    if tenant is not None and not PROVIDERS[provider].has_tenant:
        raise click.BadParameter(f"the {provider} connector has no tenant", param_hint="--tenant")
    tenant = normalize_tenant(tenant, audiences=True) if tenant is not None else None
    wanted_scopes = split_scopes(" ".join(scopes)) if scopes else None
    if scopes and not wanted_scopes:
        raise click.BadParameter("no scope given", param_hint="--scope")
    gateway = current_gateway()
    connector = fetch_connector(gateway, provider)
    plan = plan_connector(
        provider,
        connector,
        client_id=client_id,
        tenant=tenant,
        scopes=wanted_scopes,
        default_scopes=default_scopes(db.session, provider),
        rotate_secret=rotate_secret,
    )
    verb = "Creating" if plan.create else "Updating"
    click.echo(
        f"{verb} the {provider} connector:" if plan.anything else f"The {provider} connector:"
    )
    for line in plan.lines:
        click.echo(f"  {line}")
    secret = read_secret("Client secret") if plan.needs_secret else None  # after the plan
    if plan.anything:
        apply_plan(gateway, plan, secret)
        start_writing(db.session)
        record_event(
            db.session,
            "nylas.connector_set",
            actor=ACTOR,
            now=utcnow(),
            detail={
                "provider": provider,
                "created": plan.create,
                "changed": plan.changed,
                "secret_replaced": plan.needs_secret,
            },
        )
        db.session.commit()
        click.echo(f"{'Created' if plan.create else 'Updated'} at Nylas.")
    else:
        click.echo("Nothing changed.")
    if not show_preflight(db.session, gateway):
        sys.exit(1)


# -- credentials -------------------------------------------------------------------------------


def default_name(credential_type: str, tenant: str) -> str:
    """Deterministic, so a run killed after Nylas created the credential is recognised."""
    return f"reauth {credential_type} {tenant}"


def recorded(
    session: Session, provider: str, tenant: str, credential_type: str
) -> TenantCredential | None:
    return session.scalars(
        select(TenantCredential).where(
            TenantCredential.tenant == tenant,
            TenantCredential.nylas_provider == provider,
            TenantCredential.credential_type == credential_type,
        )
    ).first()


def nylas_credentials(gateway: NylasGateway, provider: str) -> list[Credential]:
    """The provider's credentials at Nylas; none when there is no such connector."""
    try:
        return list(gateway.list_credentials(provider))
    except NylasNotFound:
        return []


def delete_at_nylas(gateway: NylasGateway, provider: str, credential_id: str) -> bool:
    """Delete a credential; False when Nylas had it no more (already gone is fine)."""
    try:
        gateway.delete_credential(provider, credential_id)
    except NylasNotFound:
        return False
    return True


def credential_client_id(
    gateway: NylasGateway, provider: str, credential_type: str, client_id: str | None
) -> str:
    """The Azure app of the credential; an adminconsent one defaults to the connector's app
    (the company's own Azure app, which administrators approve)."""
    if client_id is not None:
        return check_client_id(provider, client_id)
    if credential_type == CredentialType.CONNECTOR:
        raise click.BadParameter(
            "a connector credential is another Azure app: give its client id",
            param_hint="--client-id",
        )
    connector = fetch_connector(gateway, provider)
    found = str(public_settings(connector).get("client_id") or "")
    if not AZURE_APP_ID.match(found):
        raise click.ClickException(
            f"the {provider} connector has no Azure app to default to; give --client-id or run "
            f"`reauth nylas connector set {provider}` first; nothing was changed"
        )
    return found.lower()


def same_name_elsewhere(
    credentials: Iterable[Credential], name: str, known: str | None
) -> Credential | None:
    return next((c for c in credentials if c.name == name and c.id != known), None)


def record_credential(
    session: Session,
    *,
    provider: str,
    tenant: str,
    credential_type: str,
    credential: Credential,
    replaced: str | None,
) -> None:
    """Write tenant -> credential id and its event in one transaction; Conflict when the
    record is no longer what this run read before creating the credential."""
    start_writing(session)
    existing = recorded(session, provider, tenant, credential_type)
    if (existing.credential_id if existing else None) != replaced:
        session.rollback()
        found = existing.credential_id if existing else "none"
        raise Conflict(f"meanwhile another process recorded {found} for {tenant}")
    if existing is None:
        session.add(
            TenantCredential(
                tenant=tenant,
                nylas_provider=provider,
                credential_type=credential_type,
                credential_id=credential.id,
            )
        )
    else:
        existing.credential_id = credential.id
        existing.admin_consent_at = None  # consent was given through the old credential
    record_event(
        session,
        "nylas.credential_added",
        actor=ACTOR,
        now=utcnow(),
        detail={
            "provider": provider,
            "tenant": tenant,
            "credential_type": credential_type,
            "credential_id": credential.id,
            "name": credential.name,
            "replaced": replaced,
        },
    )
    session.commit()


def undo_creation(
    gateway: NylasGateway, provider: str, credential: Credential, deleted: Sequence[str]
) -> str:
    """The local write failed: delete the new credential at Nylas so nothing is orphaned,
    or say exactly what is left there when even that fails."""
    try:
        delete_at_nylas(gateway, provider, credential.id)
    except NylasError as exc:
        return (
            f"it was NOT deleted at Nylas either ({exc}): credential {credential.id} "
            f"({credential.name!r}) exists there unrecorded; run the same command again with "
            "--replace"
        )
    if deleted:  # --replace had already deleted the old one(s) at Nylas
        return (
            f"credential {credential.id} was deleted at Nylas again; the old one "
            f"({', '.join(deleted)}) was deleted before, so run the same command again"
        )
    return f"credential {credential.id} was deleted at Nylas again, so nothing was changed"


def create_replacing(
    gateway: NylasGateway,
    provider: str,
    old_ids: Sequence[str],
    *,
    name: str,
    credential_type: str,
    credential_data: Mapping[str, Any],
) -> Credential:
    """Delete the credentials being replaced, then create the new one. The old ones go first
    because Nylas wants credential names unique; a failure says what was already deleted."""
    deleted: list[str] = []
    try:
        for old in old_ids:
            delete_at_nylas(gateway, provider, old)
            deleted.append(old)
        return gateway.create_credential(
            provider, name=name, credential_type=credential_type, credential_data=credential_data
        )
    except NylasError as exc:
        left = "nothing was changed"
        if deleted:
            left = (
                f"{', '.join(deleted)} had been deleted at Nylas already, so the record here "
                "points at nothing: run the same command again"
            )
        raise nylas_failed(exc, left) from None


def unknown_tenant_note(session: Session, tenant: str) -> str | None:
    count = session.scalar(select(func.count()).where(Account.tenant == tenant)) or 0
    if count:
        return None
    return f"note: no imported account has tenant {tenant} (accounts name their tenant on import)"


@click.group("credentials")
def credentials_group() -> None:
    """Connector credentials per tenant: another Azure app, or admin consent (App Permissions)."""


@credentials_group.command("add")
@click.argument("provider", type=click.Choice(CREDENTIAL_PROVIDERS))
@click.option("--tenant", required=True, help="Azure tenant id or verified domain.")
@click.option(
    "--type",
    "credential_type",
    required=True,
    type=click.Choice([t.value for t in CredentialType]),
    help="connector: another Azure app for this tenant's users; adminconsent: App Permissions.",
)
@click.option("--name", help="Name at Nylas (default: 'reauth TYPE TENANT').")
@click.option("--client-id", help="Azure app id (adminconsent: default the connector's app).")
@click.option("--replace", is_flag=True, help="Delete the recorded one at Nylas and make anew.")
@with_appcontext
def credentials_add_command(
    provider: str,
    tenant: str,
    credential_type: str,
    name: str | None,
    client_id: str | None,
    replace: bool,
) -> None:
    """Create a credential at Nylas for one tenant and record tenant -> credential id here.

    The client secret of the Azure app comes from a hidden prompt, or from the first line of
    stdin when that is not a terminal. One credential per tenant, provider and type:
    a second one is refused unless --replace.
    """
    tenant = normalize_tenant(tenant)
    name = (name or default_name(credential_type, tenant)).strip()
    if not name:
        raise click.BadParameter("the name is empty", param_hint="--name")
    session = db.session
    existing = recorded(session, provider, tenant, credential_type)
    existing_id = existing.credential_id if existing else None
    session.rollback()  # no transaction held open across Nylas calls and the prompt
    if existing_id is not None and not replace:
        raise click.ClickException(
            f"tenant {tenant} already has a {credential_type} credential "
            f"({existing_id}); run again with --replace to make a new one; "
            "nothing was changed"
        )
    gateway = current_gateway()
    app_id = credential_client_id(gateway, provider, credential_type, client_id)
    try:
        orphan = same_name_elsewhere(
            nylas_credentials(gateway, provider),
            name,
            existing_id,
        )
    except NylasError as exc:
        raise nylas_failed(exc) from None
    if orphan is not None and not replace:
        raise click.ClickException(
            f"Nylas already has a credential named {name!r} ({orphan.id}) that is not recorded "
            "here, perhaps left by an interrupted run; run again with --replace to delete it "
            "and create a fresh one, or choose another --name; nothing was changed"
        )
    secret = read_secret("Client secret")
    old_ids = [c for c in (orphan.id if orphan else None, existing_id) if c]
    credential = create_replacing(
        gateway,
        provider,
        old_ids,
        name=name,
        credential_type=credential_type,
        credential_data={"client_id": app_id, "client_secret": secret, "tenant": tenant},
    )
    try:
        record_credential(
            session,
            provider=provider,
            tenant=tenant,
            credential_type=credential_type,
            credential=credential,
            replaced=existing_id,
        )
    except (SQLAlchemyError, Conflict) as exc:
        session.rollback()
        why = str(exc) if isinstance(exc, Conflict) else type(exc).__name__
        raise click.ClickException(
            f"could not record the credential here ({why}); "
            + undo_creation(gateway, provider, credential, old_ids)
        ) from None
    action = "Replaced" if old_ids else "Created"
    click.echo(
        f"{action} the {credential_type} credential {credential.id} ({name!r}) for tenant "
        f"{tenant} at Nylas (Azure app {app_id}) and recorded it here."
    )
    if existing_id is not None and credential_type == CredentialType.ADMINCONSENT:
        click.echo("Admin consent given through the old credential is no longer recorded.")
    note = unknown_tenant_note(session, tenant)
    if note:
        click.echo(note)


@dataclass(frozen=True)
class Listed:
    """One credential as `credentials list` shows it: recorded here, at Nylas, or both."""

    provider: str
    credential_id: str
    tenant: str | None
    credential_type: str | None
    name: str | None
    admin_consent_at: str | None
    recorded: bool
    at_nylas: bool

    @property
    def state(self) -> str:
        if self.recorded and self.at_nylas:
            return "ok"
        return "MISSING at Nylas" if self.recorded else "not recorded here"

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "credential_id": self.credential_id,
            "tenant": self.tenant,
            "credential_type": self.credential_type,
            "name": self.name,
            "admin_consent_at": self.admin_consent_at,
            "recorded": self.recorded,
            "at_nylas": self.at_nylas,
            "state": self.state,
        }


def join_credentials(
    rows: Sequence[TenantCredential], remote: Mapping[str, list[Credential]]
) -> list[Listed]:
    """Local records beside what Nylas lists, matched by credential id."""
    listed: list[Listed] = []
    seen: set[str] = set()
    for row in rows:
        at_nylas = {c.id: c for c in remote.get(row.nylas_provider, [])}
        match = at_nylas.get(row.credential_id)
        seen.add(row.credential_id)
        consent = row.admin_consent_at.isoformat() if row.admin_consent_at else None
        listed.append(
            Listed(
                row.nylas_provider,
                row.credential_id,
                row.tenant,
                row.credential_type,
                match.name if match else None,
                consent,
                recorded=True,
                at_nylas=match is not None,
            )
        )
    for provider, credentials in remote.items():
        for credential in credentials:
            if credential.id not in seen:
                kind = credential.credential_type
                listed.append(
                    Listed(provider, credential.id, None, kind, credential.name, None, False, True)
                )
    return listed


def listed_line(item: Listed) -> str:
    who = f"{item.tenant} {item.credential_type}" if item.recorded else "-"
    name = f" {item.name!r}" if item.name else ""
    consent = f" consent {item.admin_consent_at}" if item.admin_consent_at else ""
    return f"{item.provider} {who} {item.credential_id}{name}: {item.state}{consent}"


@credentials_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def credentials_list_command(as_json: bool) -> None:
    """Recorded tenant credentials beside what Nylas lists; each one only on one side is
    flagged. Secrets are never shown (Nylas does not serve them)."""
    rows = db.session.scalars(
        select(TenantCredential).order_by(
            TenantCredential.nylas_provider,
            TenantCredential.tenant,
            TenantCredential.credential_type,
        )
    ).all()
    providers = sorted({*CREDENTIAL_PROVIDERS, *(row.nylas_provider for row in rows)})
    gateway = current_gateway()
    try:
        remote = {provider: nylas_credentials(gateway, provider) for provider in providers}
    except NylasError as exc:
        raise nylas_failed(exc, "nothing was listed") from None
    listed = join_credentials(rows, remote)
    if as_json:
        click.echo(json.dumps({"credentials": [item.as_dict() for item in listed]}))
        return
    if not listed:
        click.echo("no credentials recorded here or at Nylas")
    for item in listed:
        click.echo(listed_line(item))


@credentials_group.command("remove")
@click.argument("provider", type=click.Choice(CREDENTIAL_PROVIDERS), default="microsoft")
@click.option("--tenant", required=True, help="Azure tenant id or verified domain.")
@click.option(
    "--type",
    "credential_type",
    required=True,
    type=click.Choice([t.value for t in CredentialType]),
)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@with_appcontext
def credentials_remove_command(provider: str, tenant: str, credential_type: str, yes: bool) -> None:
    """Delete a tenant's credential at Nylas (already gone is fine), then its record here."""
    tenant = normalize_tenant(tenant)
    session = db.session
    row = recorded(session, provider, tenant, credential_type)
    if row is None:
        raise click.ClickException(
            f"no {credential_type} credential is recorded for tenant {tenant} ({provider}); "
            "nothing was changed"
        )
    credential_id, consent = row.credential_id, row.admin_consent_at
    session.rollback()  # no transaction held open across the prompt and the Nylas call
    if not yes:
        click.confirm(
            f"Delete the {credential_type} credential {credential_id} of tenant {tenant} at "
            "Nylas and here?",
            abort=True,
        )
    try:
        deleted = delete_at_nylas(current_gateway(), provider, credential_id)
    except NylasError as exc:
        raise nylas_failed(exc) from None
    start_writing(session)
    row = recorded(session, provider, tenant, credential_type)
    if row is not None and row.credential_id == credential_id:  # else replaced meanwhile
        session.delete(row)
    record_event(
        session,
        "nylas.credential_removed",
        actor=ACTOR,
        now=utcnow(),
        detail={
            "provider": provider,
            "tenant": tenant,
            "credential_type": credential_type,
            "credential_id": credential_id,
            "already_gone": not deleted,
        },
    )
    session.commit()
    where = "at Nylas and here" if deleted else "here (Nylas had it no more)"
    click.echo(f"Removed the {credential_type} credential {credential_id} of {tenant} {where}.")
    if consent is not None:
        click.echo(f"The admin consent recorded with it ({consent:%Y-%m-%d %H:%M}) went with it.")
