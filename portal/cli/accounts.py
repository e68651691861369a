"""`reauth accounts import | stats | export`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask.cli import with_appcontext

from portal.accounts.importer import import_accounts, summary_lines
from portal.accounts.ledger import account_stats, ledger_csv, stats_lines
from portal.accounts.reader import FORMATS, ImportFileError, detect_format
from portal.cli.progress import byte_progress
from portal.db import db
from portal.plugins import plugin_registry


@click.group("accounts")
def accounts_group() -> None:
    """Affected v2 accounts: import, statistics, the ledger."""


@accounts_group.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--format", "file_format", type=click.Choice(FORMATS), help="Default: by extension.")
@click.option("--skip-invalid", is_flag=True, help="Import the good rows; still report bad ones.")
@click.option("--dry-run", is_flag=True, help="Validate and classify; write nothing.")
@with_appcontext
def import_command(path: Path, file_format: str | None, skip_invalid: bool, dry_run: bool) -> None:
    """Load v2 accounts from a CSV or JSON Lines file; re-import is idempotent."""
    session = db.session
    with path.open("rb") as stream, byte_progress(path.stat().st_size, "importing") as progress:
        try:
            report = import_accounts(
                session,
                stream,
                detect_format(path, file_format),
                plugin_registry(),
                skip_invalid=skip_invalid,
                dry_run=dry_run,
                progress=progress,
                source_name=path.name,
            )
        except ImportFileError as exc:
            session.rollback()
            raise click.ClickException(f"{path}: {exc}; nothing was imported") from None
    for line in summary_lines(report):
        click.echo(line, err=line.startswith(("line ", "...")))
    if dry_run:
        click.echo("dry run: nothing was written")
        if report.rejected:
            sys.exit(1)  # a dry run validates the file: bad rows must fail it
    elif not report.committed:
        raise click.ClickException(
            f"{report.rejected} bad row(s); nothing was imported "
            "(fix them, or use --skip-invalid to import the good rows)"
        )
    elif report.rejected:
        sys.exit(1)


@accounts_group.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_appcontext
def stats_command(as_json: bool) -> None:
    """Counts by category, plugin and status, and the completion rate."""
    stats = account_stats(db.session)
    if as_json:
        click.echo(json.dumps(stats))
        return
    for line in stats_lines(stats):
        click.echo(line)


@accounts_group.command("export")
@click.argument("path", default="-", type=click.Path(dir_okay=False, allow_dash=True))
@with_appcontext
def export_command(path: str) -> None:
    """Write the ledger (v2 account id -> v3 grant id) as CSV to PATH or stdout."""
    chunks = ledger_csv(db.session)
    if path == "-":
        for chunk in chunks:
            sys.stdout.write(chunk)
        return
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    with partial.open("w", encoding="utf-8", newline="") as handle:
        handle.writelines(chunks)
    partial.replace(target)  # a killed export never leaves a truncated file under the real name
    click.echo(f"ledger written to {target}", err=True)
