"""Decide what the emulated provider answers to the sign-in form.

Microsoft (and the other OAuth providers): the user accepts as some mailbox, denies, or hits one
of the scenario switches. EWS: the Exchange password is checked against the seeded one. IMAP
(and the other password providers): the password, server and user name against the seeded
`password_accounts`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from portal.testing.emulator.state import PasswordAccount

ADMIN_CONSENT_REQUIRED = (
    "AADSTS65001: The user or administrator has not consented to use the application. "
    "Send an interactive authorization request for this user and resource."
)
USER_CANCELLED = "AADSTS65004: User declined to consent to access the app (the user cancelled)."
USER_DENIED = "The user denied the consent request."
EWS_CANCELLED = "The user cancelled the Exchange sign-in."
IMAP_CANCELLED = "The user cancelled the IMAP sign-in."
#: The providers whose hosted page asks for a server and a password instead of an OAuth login.
PASSWORD_PROVIDERS = frozenset({"imap", "icloud"})
TENANT_REQUIRED = "Enter the tenant (its id or a verified domain) you consent for."
SCENARIOS = ("normal", "admin_consent_required", "user_cancelled", "different_mailbox")


@dataclass
class SignInOutcome:
    """Either a signed-in mailbox, an error for the redirect, or an error to show on the form."""

    email: str | None = None
    redirect_params: dict[str, str] = field(default_factory=dict)
    form_error: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    consented_tenant: str | None = None  # admin consent given for this tenant


def redirect_error(error: str, description: str) -> SignInOutcome:
    """Send the user back to the application with an OAuth error."""
    return SignInOutcome(redirect_params={"error": error, "error_description": description})


def valid_email(value: str) -> bool:
    """Accept anything shaped like local@domain; the emulator is not a mail validator."""
    local, _, domain = value.partition("@")
    return bool(local) and "." in domain and " " not in value


def outcome_for_form(
    params: Mapping[str, str],
    form: Mapping[str, str],
    ews_passwords: Mapping[str, str],
    password_accounts: Mapping[str, PasswordAccount] | None = None,
) -> SignInOutcome:
    """Route the form answer to the page that produced it."""
    if params.get("response_type") == "adminconsent":
        return admin_consent_outcome(form)
    if params.get("provider") == "ews":
        return ews_outcome(form, ews_passwords)
    if params.get("provider") in PASSWORD_PROVIDERS:
        return password_outcome(form, password_accounts or {})
    return oauth_outcome(form)


def password_outcome(
    form: Mapping[str, str], accounts: Mapping[str, PasswordAccount]
) -> SignInOutcome:
    """Answer the IMAP form: the seeded password, and the seeded server and user name when the
    seed names them. Anything wrong keeps the user on the form, as Nylas' page does."""
    if form.get("action") != "accept":
        return redirect_error("access_denied", IMAP_CANCELLED)
    email = form.get("email", "").strip()
    account = accounts.get(email.lower())
    host = form.get("imap_host", "").strip().lower()
    port = form.get("imap_port", "").strip() or "993"
    username = form.get("imap_username", "").strip() or email
    if not valid_email(email) or account is None or form.get("password") != account.password:
        return SignInOutcome(form_error="The email address or password is incorrect.")
    if not host or not port.isdigit():
        return SignInOutcome(form_error="Enter the IMAP server and port.")
    if account.imap_host and (host, int(port)) != (account.imap_host, account.imap_port):
        return SignInOutcome(form_error=f"Could not connect to {host}:{port}.")
    if account.username and username != account.username:
        return SignInOutcome(form_error="The email address or password is incorrect.")
    settings = {"imap_host": host, "imap_port": int(port), "imap_username": username}
    return SignInOutcome(email=email, settings=settings)


def oauth_outcome(form: Mapping[str, str]) -> SignInOutcome:
    """Answer the Microsoft-style account page."""
    if form.get("action") != "accept":
        return redirect_error("access_denied", USER_DENIED)
    scenario = form.get("scenario", "normal")
    if scenario == "admin_consent_required":
        return redirect_error("access_denied", ADMIN_CONSENT_REQUIRED)
    if scenario == "user_cancelled":
        return redirect_error("access_denied", USER_CANCELLED)
    email = form.get("email", "").strip()
    if scenario == "different_mailbox":
        email = form.get("other_email", "").strip() or other_mailbox(email)
    if not valid_email(email):
        return SignInOutcome(form_error="Enter the email address of the mailbox.")
    return SignInOutcome(email=email)


def other_mailbox(email: str) -> str:
    """Make up a different address in the same domain for the "different mailbox" switch."""
    local, _, domain = email.partition("@")
    return f"someone.else.{local or 'user'}@{domain or 'example.com'}"


def ews_outcome(form: Mapping[str, str], ews_passwords: Mapping[str, str]) -> SignInOutcome:
    """Answer the Exchange credentials form; a wrong password keeps the user on the form."""
    if form.get("action") != "accept":
        return redirect_error("access_denied", EWS_CANCELLED)
    email = form.get("email", "").strip()
    expected = ews_passwords.get(email.lower())
    if not valid_email(email) or expected is None or form.get("password") != expected:
        return SignInOutcome(form_error="The email address or password is incorrect.")
    server = form.get("server", "").strip()
    return SignInOutcome(email=email, settings={"ews_host": server} if server else {})


def admin_consent_outcome(form: Mapping[str, str]) -> SignInOutcome:
    """Answer the admin-consent page: `admin_consent=true` and the tenant, or an error.

    Nylas documents `admin_consent` true and `state` on the return; `tenant` is what Microsoft
    itself sends back (whether Nylas passes it on is UNCONFIRMED, docs/nylas.md)."""
    if form.get("action") != "accept":
        return redirect_error("access_denied", USER_DENIED)
    tenant = form.get("tenant", "").strip()
    if not tenant or tenant.lower() in {"common", "organizations"}:
        # Microsoft: an administrator consents for one directory, never for "common".
        return SignInOutcome(form_error=TENANT_REQUIRED)
    return SignInOutcome(
        redirect_params={"admin_consent": "true", "tenant": tenant}, consented_tenant=tenant
    )
