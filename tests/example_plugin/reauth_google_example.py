"""Example third-party plugin: Gmail and Google Workspace accounts sign in again with Google.

The worked example of docs/plugins.md. It claims v2 accounts of provider `gmail` or `google`,
asks Nylas' `google` connector for the Gmail scopes, and accepts the result only when the same
Gmail mailbox came back (Gmail ignores dots and `+tags` in the local part of its addresses).
"""

from __future__ import annotations

from collections.abc import Sequence

from portal.plugins import AccountView, AuthResult, Claim, Plugin, Verdict, Wording

GOOGLE_PROVIDERS = frozenset({"gmail", "google"})
GMAIL_SCOPES = ("https://www.googleapis.com/auth/gmail.modify",)
GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})
READY = Claim("google_ready", needs_reauth=False, reason="Google account already on Gmail scopes")
CONSENT = Claim(
    "google_consent", needs_reauth=True, reason="Google account must sign in and accept Gmail"
)


def gmail_mailbox(address: str) -> str:
    """Normalise an address the way Gmail routes it: case, dots and +tags do not matter."""
    local, _, domain = address.strip().lower().rpartition("@")
    if domain in GMAIL_DOMAINS:
        local = local.split("+", 1)[0].replace(".", "")
        domain = "gmail.com"
    return f"{local}@{domain}"


class GoogleExamplePlugin(Plugin):
    name = "google-example"
    display_name = "Google (Gmail, Workspace)"
    nylas_provider = "google"
    priority = 50

    def claim(self, account: AccountView) -> Claim | None:
        if (account.provider or "").strip().lower() not in GOOGLE_PROVIDERS:
            return None
        granted = set((account.scopes or "").replace(",", " ").split())
        if (account.grant_status or "").lower() == "valid" and granted >= set(GMAIL_SCOPES):
            return READY
        return CONSENT

    def required_scopes(self, account: AccountView) -> Sequence[str]:
        return GMAIL_SCOPES

    def verify(self, account: AccountView, result: AuthResult) -> Verdict:
        if gmail_mailbox(result.email) != gmail_mailbox(account.email):
            return Verdict.refuse("mailbox_mismatch")
        missing = set(self.required_scopes(account)) - set(result.scopes)
        if missing:
            return Verdict.refuse("missing_scopes:" + " ".join(sorted(missing)))
        return Verdict.accept()

    def wording(self, account: AccountView) -> Wording:
        return Wording(
            headline="Reconnect your Google mailbox",
            explanation=(
                "We moved to a new connection with Google. Your mailbox stays the same, "
                "but Google needs you to approve the new connection once."
            ),
            next_step="You will sign in with Google and allow access to Gmail.",
            email_subject="Action needed: reconnect your Google mailbox",
        )
