"""`reauth accounts import | stats | export | retirable`."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path

import click
from flask.cli import with_appcontext

from portal.accounts.importer import import_accounts, summary_lines
from portal.accounts.ledger import account_stats, ledger_csv, stats_lines
from portal.accounts.reader import FORMATS, ImportFileError, detect_format
from portal.accounts.retire import (
    RetireReport,
    count_completed,
    nylas_grants,
    record_listing,
    retirable_csv,
    retirable_rows,
)
from portal.accounts.retire import (
    summary_lines as retire_summary_lines,
)
from portal.cli.nylas import grant_counter
from portal.cli.progress import byte_progress
from portal.db import db
from portal.models import utcnow
from portal.nylas import NylasError, current_gateway
from portal.plugins import plugin_registry

AGE = re.compile(r"(\d+)([smhdw])")
AGE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
DEFAULT_MIN_AGE = "7d"


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
    write_atomically(target, chunks)
    click.echo(f"ledger written to {target}", err=True)


def write_atomically(target: Path, chunks: Iterable[str]) -> None:
    """Write beside the target, then rename: a killed run never leaves a truncated file under
    the real name, and a failed one leaves no file at all."""
    partial = target.with_name(target.name + ".partial")
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle:
            handle.writelines(chunks)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(target)


def parse_age(value: str) -> timedelta:
    """`0`, `30m`, `12h`, `7d`, `2w`: the grace period after a completion."""
    text = value.strip().lower()
    if text == "0":
        return timedelta(0)
    match = AGE.fullmatch(text)
    if not match:
        raise click.BadParameter(
            f"{value!r}: use a number and a unit (s, m, h, d, w), such as 7d or 12h; 0 for none",
            param_hint="--min-age",
        )
    return timedelta(**{AGE_UNITS[match[2]]: int(match[1])})


def end_line(progress: Callable[[int], None] | None) -> None:
    """End the running count's line on a terminal (there is none elsewhere)."""
    if progress:
        click.echo("", err=True)


@accounts_group.command("retirable")
@click.argument("path", default="-", type=click.Path(dir_okay=False, allow_dash=True))
@click.option(
    "--min-age",
    default=DEFAULT_MIN_AGE,
    show_default=True,
    help="Grace period: list only completions older than this (s, m, h, d, w; 0 for none).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object.")
@with_appcontext
def retirable_command(path: str, min_age: str, as_json: bool) -> None:
    """Write the v2 account ids that are safe to retire at Nylas v2 as CSV to PATH or stdout.

    Safe: completed, its v3 grant valid at Nylas now and naming the same mailbox, the company's
    app notified, and the completion older than --min-age. The summary (safe, held back by
    reason) goes to stderr, or with --json to stdout as one JSON object. Nothing is called at
    Nylas v2: the list is for the v2 API, dashboard or support (docs/admin.md).
    """
    if as_json and path == "-":
        raise click.UsageError("--json needs a PATH: the CSV and the summary cannot share stdout")
    age = parse_age(min_age)
    if path != "-" and not Path(path).parent.is_dir():
        # Checked before Nylas is asked: a long listing should not end in a typo.
        raise click.UsageError(f"{path}: no such directory; nothing was asked or written")
    session = db.session
    report = RetireReport(min_age_seconds=int(age.total_seconds()))
    now = utcnow()
    progress = grant_counter()
    try:
        with nylas_grants(session, current_gateway(), progress) as listed:
            end_line(progress)
            report.grants_listed = listed
            with byte_progress(count_completed(session), "checking accounts") as advance:
                rows = retirable_rows(session, report, now, advance)
                if path == "-":
                    for chunk in retirable_csv(rows):
                        sys.stdout.write(chunk)
                else:
                    write_atomically(Path(path), retirable_csv(rows))
    except NylasError as exc:
        session.rollback()
        end_line(progress)
        raise click.ClickException(f"Nylas: {exc}; no list was written") from None
    except OSError as exc:
        session.rollback()
        raise click.ClickException(f"{path}: {exc.strerror}; no list was written") from None
    record_listing(session, report, "stdout" if path == "-" else str(Path(path)), now)
    session.commit()
    if as_json:
        click.echo(json.dumps(report.as_dict()))
        return
    for line in retire_summary_lines(report):
        click.echo(line, err=True)
    if path != "-":
        click.echo(f"list written to {path}", err=True)
