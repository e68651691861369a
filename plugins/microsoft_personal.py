"""Personal Microsoft accounts (Outlook.com, Hotmail, Live, MSN): a new grant from scratch (C4)."""

from __future__ import annotations

from collections.abc import Sequence

from reauth_plugins.microsoft_rules import (
    CLAIMS,
    MICROSOFT_MISMATCH_ADVICE,
    MICROSOFT_STUCK_HELP,
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
    priority = 30

    def claim(self, account: AccountView) -> Claim | None:
        found = situation(account)
        return CLAIMS[found] if found is Situation.PERSONAL else None

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
            mismatch_advice=MICROSOFT_MISMATCH_ADVICE,
            stuck_help=MICROSOFT_STUCK_HELP,
        )
