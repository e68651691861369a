"""Which situation of the Nylas v3 move a Microsoft account is in (docs/classification.md).

The three built-in plugins share this one decision so that each account lands in exactly one
situation whatever plugins are enabled. docs/classification.md gives the reason for each rule.
"""

from __future__ import annotations

from enum import StrEnum
from functools import cache, lru_cache
from importlib.resources import files

from portal.plugins import (
    GRAPH_BASELINE,
    AccountView,
    Claim,
    is_on_graph,
    split_scopes,
    translate,
)

# The words of every plugin whose people sign in on Microsoft's pages (Wording).
MICROSOFT_MISMATCH_ADVICE = (
    'If you are signed in to several Microsoft accounts, choose "Use another account" on '
    "Microsoft's page."
)
MICROSOFT_STUCK_HELP = (
    'Some Microsoft pages, such as "Need admin approval", do not send you back here. If '
    "Microsoft says an administrator must approve, ask your IT administrator to approve the "
    "app for your organisation, then open the link again."
)

MICROSOFT_PROVIDERS = frozenset(
    {"office365", "exchange", "eas", "ews", "graph", "outlook", "hotmail", "microsoft"}
)
CONSUMER_PROVIDERS = frozenset({"outlook", "hotmail"})
EXCHANGE_PROTOCOL_PROVIDERS = frozenset({"exchange", "eas", "ews"})
# Hosts of Exchange Online (worldwide, GCC High/DoD, China); anything else is on-premises.
CLOUD_EXCHANGE_SUFFIXES = (
    "outlook.office365.com",
    "outlook.office.com",
    ".outlook.com",
    ".office365.com",
    ".office365.us",
    "outlook.office365.us",
    "webmail.apps.mil",
    "partner.outlook.cn",
    ".partner.outlook.cn",
)
TENANT_DOMAIN_SUFFIXES = (".onmicrosoft.com", ".onmicrosoft.us", ".partner.onmschina.cn")


class Situation(StrEnum):
    GRAPH_READY = "graph_ready"  # C1: token auth already on Graph scopes, valid grant
    GRAPH_CONSENT = "graph_consent"  # C2: Office 365 on EWS/EAS scopes or Basic Auth
    EXCHANGE_ONPREM = "exchange_onprem"  # C3: on-premises Exchange, password via EWS
    PERSONAL = "personal"  # C4: Outlook.com, Hotmail, Live, MSN


@cache
def consumer_domains() -> frozenset[str]:
    text = files("portal").joinpath("data/consumer_domains.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip().lower()
        for line in text.splitlines()
        if line.strip() and not line.startswith("#")
    )


def email_domain(email: str) -> str:
    return email.rpartition("@")[2].strip().lower().rstrip(".")


def is_consumer_address(email: str) -> bool:
    """Exact domain match only: a company's `outlook.contoso.com` is not Outlook.com."""
    return email_domain(email) in consumer_domains()


def is_cloud_exchange_host(host: str) -> bool:
    host = host.strip().lower().rstrip(".")
    if "://" in host:
        host = host.split("://", 1)[1]
    host = host.split("/", 1)[0].split(":", 1)[0]
    return any(host == s.lstrip(".") or host.endswith(s) for s in CLOUD_EXCHANGE_SUFFIXES)


def is_tenant_domain(domain: str) -> bool:
    return domain.endswith(TENANT_DOMAIN_SUFFIXES)


def is_microsoft(account: AccountView) -> bool:
    return account.provider.lower() in MICROSOFT_PROVIDERS


def is_on_premises(provider: str, auth: str, domain: str, ews_host: str | None) -> bool:
    """On-premises Exchange: a non-Microsoft EWS host, or a password account with no host."""
    if ews_host:
        return not is_cloud_exchange_host(ews_host)
    if is_tenant_domain(domain) or provider in {"office365", "graph"}:
        return False
    return provider in EXCHANGE_PROTOCOL_PROVIDERS and auth == "password"


def situation(account: AccountView) -> Situation | None:
    """Place a Microsoft account in one situation; None for other providers."""
    return decide(
        account.provider.lower(),
        (account.authentication_type or "oauth").lower(),
        email_domain(account.email),
        account.ews_host,
        account.grant_status,
        account.scopes,
    )


# The decision depends only on these fields, which repeat across a company's accounts;
# the cache makes classifying a million imported rows cheap.
@lru_cache(maxsize=65536)
def decide(
    provider: str,
    auth: str,
    domain: str,
    ews_host: str | None,
    grant_status: str | None,
    scopes: str | None,
) -> Situation | None:
    if provider not in MICROSOFT_PROVIDERS:
        return None
    if provider in CONSUMER_PROVIDERS or domain in consumer_domains():
        return Situation.PERSONAL
    if is_on_premises(provider, auth, domain, ews_host):
        return Situation.EXCHANGE_ONPREM
    if auth == "password":
        return Situation.GRAPH_CONSENT  # Office 365 Basic Auth is gone; OAuth is the only way
    if grant_status == "invalid":
        return Situation.GRAPH_CONSENT  # the import left a placeholder, whatever the scopes
    if provider == "graph" or is_on_graph(split_scopes(scopes)):
        return Situation.GRAPH_READY
    return Situation.GRAPH_CONSENT


# One shared Claim per situation: claims are immutable, and building them per row is waste.
SITUATION_REASONS = {
    Situation.GRAPH_READY: "token account already on Microsoft Graph scopes; nothing to do",
    Situation.GRAPH_CONSENT: "Office 365 account must sign in with Microsoft and accept Graph scopes",
    Situation.EXCHANGE_ONPREM: "on-premises Exchange account must re-enter its password (EWS)",
    Situation.PERSONAL: (
        "personal Microsoft account: signs in again from scratch (a new grant, or its placeholder "
        "if the Nylas import made one)"
    ),
}


CLAIMS = {
    found: Claim(
        category=found.value, needs_reauth=found is not Situation.GRAPH_READY, reason=reason
    )
    for found, reason in SITUATION_REASONS.items()
}


def graph_scopes_for(account: AccountView) -> list[str]:
    """Graph scopes covering what the v2 account had; the baseline when its scopes are unknown."""
    try:
        return translate(split_scopes(account.scopes))
    except ValueError:
        return list(GRAPH_BASELINE)
