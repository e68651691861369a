"""Personal Microsoft accounts (Outlook.com, Hotmail, Live, MSN): a new grant from scratch (C4)."""

from __future__ import annotations

from collections.abc import Sequence

from reauth_plugins.microsoft_rules import (
    SITUATION_REASONS,
    Situation,
    graph_scopes_for,
    situation,
)

from portal.plugins import AccountView, Claim, Plugin, Wording


class MicrosoftPersonalPlugin(Plugin):
    name = "microsoft-personal"
    display_name = "Outlook.com / Hotmail (personal)"
    nylas_provider = "microsoft"
    creates_new_grant = True
    priority = 10

    def claim(self, account: AccountView) -> Claim | None:
        if situation(account) is not Situation.PERSONAL:
            return None
        return Claim(
            category=Situation.PERSONAL.value,
            needs_reauth=True,
            reason=SITUATION_REASONS[Situation.PERSONAL],
        )

    def required_scopes(self, account: AccountView) -> Sequence[str]:
        return graph_scopes_for(account)

    def wording(self, account: AccountView) -> Wording:
        return Wording(
            headline="Connect your Outlook.com mailbox again",
            explanation=(
                "Personal Microsoft accounts (Outlook.com, Hotmail, Live, MSN) could not be moved "
                "to our new connection automatically. Connecting again takes a minute."
            ),
            next_step="You will sign in with your Microsoft account and approve access.",
            email_subject="Action needed: connect your Outlook.com mailbox again",
        )
