"""Office 365 accounts that must re-consent through Microsoft OAuth with Graph scopes (C1, C2)."""

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


class MicrosoftGraphPlugin(Plugin):
    name = "microsoft-graph"
    display_name = "Microsoft 365 (Graph)"
    nylas_provider = "microsoft"
    priority = 10

    def claim(self, account: AccountView) -> Claim | None:
        found = situation(account)
        return CLAIMS[found] if found in (Situation.GRAPH_READY, Situation.GRAPH_CONSENT) else None

    def required_scopes(self, account: AccountView) -> Sequence[str]:
        return graph_scopes_for(account)

    def wording(self, account: AccountView) -> Wording:
        return Wording(
            headline="Reconnect your Microsoft 365 mailbox",
            explanation=(
                "We moved to a new connection with Microsoft. Your mailbox stays the same, "
                "but Microsoft needs you to approve the new connection once."
            ),
            next_step="You will sign in with Microsoft and accept the requested permissions.",
            email_subject="Action needed: reconnect your Microsoft 365 mailbox",
            mismatch_advice=MICROSOFT_MISMATCH_ADVICE,
            stuck_help=MICROSOFT_STUCK_HELP,
        )
