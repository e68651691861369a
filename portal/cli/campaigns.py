"""`reauth campaigns list | pause | resume`: the admin UI's campaigns, from a shell
(docs/campaigns.md). Pause and resume are recorded with `cli:<os user>` as the actor."""

from __future__ import annotations

import json

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from portal.cli.invite import os_user
from portal.db import begin_writer, db
from portal.mail.campaigns import IllegalMove, campaign_stats, pause, resume
from portal.models import Campaign, utcnow


@click.group("campaigns")
def campaigns_group() -> None:
    """Invitation campaigns: list them, pause or resume one."""


@campaigns_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per campaign.")
@with_appcontext
def list_command(as_json: bool) -> None:
    """Every campaign, newest first, with its state and what it sent."""
    rows = list(db.session.scalars(select(Campaign).order_by(Campaign.id.desc())))
    stats = campaign_stats(db.session, [row.id for row in rows])
    for row in rows:
        numbers = stats[row.id]
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "id": row.id,
                        "name": row.name,
                        "state": row.state,
                        "launched_by": row.launched_by,
                        **vars(numbers),
                    }
                )
            )
        else:
            click.echo(
                f"{row.id}\t{row.state}\t{row.name}\tsent {numbers.sent}/{numbers.queued}, "
                f"bounced {numbers.bounced}, opened {numbers.opened}, "
                f"completed {numbers.completed}"
            )
    db.session.rollback()


def change(campaign_id: int, action: str) -> None:
    session = db.session
    begin_writer(session)
    campaign = session.get(Campaign, campaign_id)
    if campaign is None:
        raise click.ClickException(f"no campaign {campaign_id}")
    moves = {"pause": pause, "resume": resume}
    try:
        count = moves[action](session, campaign, actor=f"cli:{os_user()}", now=utcnow())
    except IllegalMove as exc:
        session.rollback()
        raise click.ClickException(str(exc)) from None
    session.commit()
    said = "held" if action == "pause" else "released"
    click.echo(f"campaign {campaign_id} {campaign.state}: {count} pending email(s) {said}")


@campaigns_group.command("pause")
@click.argument("campaign_id", type=int)
@with_appcontext
def pause_command(campaign_id: int) -> None:
    """Pause a campaign: nothing more is queued and its pending emails are held."""
    change(campaign_id, "pause")


@campaigns_group.command("resume")
@click.argument("campaign_id", type=int)
@with_appcontext
def resume_command(campaign_id: int) -> None:
    """Resume a paused campaign: its held emails are sent and the queuing goes on."""
    change(campaign_id, "resume")
