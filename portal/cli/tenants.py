"""`reauth tenants import | list`: Azure tenants as records (docs/tenants.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask.cli import with_appcontext

from portal.accounts.tenants import (
    DirectoryError,
    derive_from_accounts,
    import_directory,
    summary_lines,
    tenant_summaries,
    unrecorded_tenants,
)
from portal.db import db
from portal.extensions import current_settings
from portal.journey.bulk import bulk_tenants, plan_bulk
from portal.journey.tenant_invites import invite_admins
from portal.models import utcnow

CLI_ACTOR = "cli"


@click.group("tenants")
def tenants_group() -> None:
    """Azure tenants: their directory, track and administrator consent."""


@tenants_group.command("import")
@click.argument(
    "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False
)
@click.option(
    "--from-accounts",
    is_flag=True,
    help="Also make a users-track record for each accounts' tenant that has none.",
)
@click.option("--dry-run", is_flag=True, help="Validate the file; write nothing.")
@with_appcontext
def import_command(path: Path | None, from_accounts: bool, dry_run: bool) -> None:
    """Load a tenant directory (CSV: tenant, name, admin_email, credential_id, track)."""
    if path is None and not from_accounts:
        raise click.UsageError("give a directory PATH, --from-accounts, or both")
    session = db.session
    if path is not None:
        with path.open("rb") as stream:
            try:
                report = import_directory(
                    session, stream, actor=CLI_ACTOR, now=utcnow(), dry_run=dry_run
                )
            except DirectoryError as exc:
                session.rollback()
                raise click.ClickException(f"{path}: {exc}; nothing was imported") from None
        for line in summary_lines(report):
            click.echo(line, err=line.startswith(("line ", "...")))
        if report.errors:
            raise click.ClickException(
                f"{len(report.errors)} bad line(s); nothing was imported (fix them and run again)"
            )
        if dry_run:
            click.echo("dry run: nothing was written")
            return
    if from_accounts and not dry_run:
        created = derive_from_accounts(session, actor=CLI_ACTOR, now=utcnow())
        click.echo(f"tenants from the accounts: {created} new")


@tenants_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@with_appcontext
def list_command(as_json: bool) -> None:
    """Each tenant with its accounts, completion, track and consent state."""
    session = db.session
    summaries = list(tenant_summaries(session))
    if as_json:
        for summary in summaries:
            click.echo(json.dumps(summary.as_dict()))
        return
    if not summaries:
        click.echo("no tenants: run `reauth tenants import PATH` or `--from-accounts`")
    for summary in summaries:
        label = f"{summary.tenant} ({summary.name})" if summary.name else summary.tenant
        consent = summary.consent
        if summary.consented_at is not None:
            consent += f" {summary.consented_at:%Y-%m-%d %H:%M} UTC"
            if summary.consented_by:
                consent += f" by {summary.consented_by}"
        admin = summary.admin_email or "no administrator contact"
        click.echo(
            f"{label}: {summary.completed}/{summary.needs_reauth} completed "
            f"({summary.accounts} accounts), track {summary.track}, consent {consent}, {admin}"
        )
    missing = unrecorded_tenants(session)
    if missing:
        click.echo(
            f"{missing} tenant(s) named by accounts have no record: "
            "run `reauth tenants import --from-accounts`",
            err=True,
        )


@tenants_group.command("invite")
@click.option("--tenant", "only", help="Only this tenant (its id or domain).")
@with_appcontext
def invite_command(only: str | None) -> None:
    """Email each tenant's administrator a link to approve the app (once per consent round)."""
    report = invite_admins(db.session, current_settings(), now=utcnow(), only=only)
    db.session.commit()
    if only is not None and not report.invited and not report.skipped:
        raise click.ClickException(f"no tenant {only}: run `reauth tenants list`")
    for key in report.invited:
        click.echo(f"{key}: invitation queued")
    for key, reason in report.skipped.items():
        click.echo(f"{key}: not invited: {reason}", err=True)
    click.echo(f"tenant administrators invited: {len(report.invited)}")


@tenants_group.command("reauth")
@click.option("--tenant", "tenant_key", metavar="T", help="Only this tenant (id or domain).")
@click.option("--dry-run", is_flag=True, help="Count the jobs a run would queue; queue nothing.")
@with_appcontext
def reauth_command(tenant_key: str | None, dry_run: bool) -> None:
    """Queue bulk re-authentication for consented tenants on the admin track.

    One job per account still needing re-authentication; `reauth worker` runs them through
    Nylas' Microsoft bulk auth. Running it again queues nothing new (docs/tenants.md).
    """
    session = db.session
    tenants = bulk_tenants(session, tenant_key)
    if not tenants:
        session.rollback()
        which = f"tenant {tenant_key!r} is not" if tenant_key else "no tenant is"
        raise click.ClickException(
            f"{which} on the admin track with consent recorded; nothing was queued"
        )
    now = utcnow()
    plans = [plan_bulk(session, tenant, now, dry_run=dry_run) for tenant in tenants]
    if dry_run:
        session.rollback()
    else:
        session.commit()
    verb = "would queue" if dry_run else "queued"
    for plan in plans:
        click.echo(
            f"{plan.tenant}: {verb} {plan.queued} of {plan.accounts} accounts "
            "still needing re-authentication"
        )
    total = sum(plan.queued for plan in plans)
    if dry_run:
        click.echo("dry run: nothing was queued")
    elif total:
        click.echo("run `reauth worker` to re-authenticate them")
