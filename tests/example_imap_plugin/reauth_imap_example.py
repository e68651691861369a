"""An IMAP password plugin: v2 accounts of provider `imap` sign in again on Nylas' IMAP form.

It imports only `portal.plugins`, like every plugin. It contributes one preflight check of its
own (its table of known IMAP servers is well formed) beside the core's IMAP connector check.
"""

from __future__ import annotations

from portal.plugins import AccountView, Claim, Plugin, PreflightCheck, Wording

IMAP_PROVIDERS = frozenset({"imap", "generic_imap"})
#: Servers the wording may name for well-known domains (port 993, implicit TLS).
KNOWN_SERVERS = {"fastmail.com": "imap.fastmail.com", "mail.example": "imap.mail.example"}
PASSWORD = Claim("imap_password", needs_reauth=True, reason="IMAP mailbox signs in with a password")


def known_servers_problem() -> str | None:
    bad = [domain for domain, host in KNOWN_SERVERS.items() if not host or " " in host]
    return f"known IMAP servers without a host: {', '.join(bad)}" if bad else None


class ImapExamplePlugin(Plugin):
    name = "imap-example"
    display_name = "IMAP mailbox (password)"
    nylas_provider = "imap"
    priority = 60
    requires_api = ">=1.1,<2"

    def claim(self, account: AccountView) -> Claim | None:
        if (account.provider or "").strip().lower() not in IMAP_PROVIDERS:
            return None
        return PASSWORD

    def preflight_checks(self) -> list[PreflightCheck]:
        return [PreflightCheck("known_servers", known_servers_problem)]

    def wording(self, account: AccountView) -> Wording:
        domain = account.email.rpartition("@")[2].lower()
        server = KNOWN_SERVERS.get(domain, "your mail provider's IMAP server")
        return Wording(
            headline="Reconnect your mailbox",
            explanation="We moved to a new connection for your mailbox and need you to sign in "
            "once more.",
            next_step=f"You will type your IMAP server ({server}), your user name and your "
            "password on Nylas' page, never on ours.",
            email_subject="Action needed: reconnect your mailbox",
        )
