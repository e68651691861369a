"""On-premises Exchange accounts that re-enter their password on Nylas' EWS form (C3)."""

from __future__ import annotations

from reauth_plugins.microsoft_rules import CLAIMS, Situation, situation

from portal.plugins import AccountView, Claim, Plugin, Wording


class EwsPasswordPlugin(Plugin):
    name = "ews-password"
    display_name = "Exchange Server (EWS)"
    nylas_provider = "ews"
    priority = 20

    def claim(self, account: AccountView) -> Claim | None:
        found = situation(account)
        return CLAIMS[found] if found is Situation.EXCHANGE_ONPREM else None

    def wording(self, account: AccountView) -> Wording:
        return Wording(
            headline="Reconnect your Exchange mailbox",
            explanation=(
                "We moved to a new connection for Exchange Server mailboxes. To keep your mail "
                "working, enter your Exchange password once more."
            ),
            next_step=(
                "You will type your password on our email provider Nylas' secure page; "
                "it never passes through this site."
            ),
            email_subject="Action needed: reconnect your Exchange mailbox",
            mismatch_advice=(
                "On the Exchange page, type this address and its password, not those of "
                "another mailbox you use."
            ),
        )
