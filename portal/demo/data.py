"""Sample data for `reauth demo`: ~200 v2 accounts in every situation, and the emulator seed."""

from __future__ import annotations

import csv
import io
import random
from typing import Any

DEMO_PASSWORD = "demo-password"  # noqa: S105  (the Exchange password of every demo mailbox)
AZURE_APP_ID = "6c1f4b52-8f0e-4c1b-9a43-2a9f0c7d1e55"  # a made-up Azure app for the emulator
GRAPH_SCOPES = [
    "Mail.ReadWrite",
    "Mail.Send",
    "Calendars.ReadWrite",
    "Contacts.ReadWrite",
    "People.Read",
    "User.Read",
    "offline_access",
]
COLUMNS = (
    "account_id",
    "email",
    "provider",
    "authentication_type",
    "scopes",
    "ews_host",
    "grant_id",
    "grant_status",
    "tenant",
    "name",
    "locale",
    "external_id",
    "service_account",
)
FIRST = [
    "Ada",
    "Alan",
    "Barbara",
    "Claude",
    "Donald",
    "Edsger",
    "Frances",
    "Grace",
    "Hedy",
    "John",
    "Katherine",
    "Leslie",
    "Margaret",
    "Niklaus",
    "Radia",
    "Shafi",
    "Tim",
    "Vint",
]
LAST = [
    "Lovelace",
    "Turing",
    "Liskov",
    "Shannon",
    "Knuth",
    "Dijkstra",
    "Allen",
    "Hopper",
    "Lamarr",
    "Backus",
    "Johnson",
    "Lamport",
    "Hamilton",
    "Wirth",
    "Perlman",
    "Goldwasser",
]
EWS_SCOPE = "https://outlook.office365.com/EWS.AccessAsUser.All"
# (situation, how many, provider, scopes, domain, grant_status). Exchange (on-premises)
# mailboxes sign in with a password at mail.<domain>; the others with OAuth.
PLAN = [
    ("graph_ready", 40, "office365", " ".join(GRAPH_SCOPES), "contoso.com", "valid"),
    ("graph_consent", 60, "office365", "email calendar contacts", "contoso.com", "invalid"),
    ("graph_consent_eas", 10, "eas", EWS_SCOPE, "northwind.onmicrosoft.com", "invalid"),
    ("exchange_onprem", 40, "exchange", "email calendar", "fabrikam.com", "invalid"),
    ("personal", 40, "outlook", "email calendar", "outlook.com", ""),
    ("service_account", 5, "exchange", "", "fabrikam.com", ""),
    ("other", 5, "gmail", "email", "gmail.com", ""),
]


def demo_rows(seed: int = 2026) -> list[dict[str, str]]:
    """Deterministic sample accounts; grant ids are set where the Nylas import made one."""
    rng = random.Random(seed)
    rows: list[dict[str, str]] = []
    for situation, count, provider, scopes, domain, status in PLAN:
        exchange = provider == "exchange"
        auth, host = ("password", f"mail.{domain}") if exchange else ("oauth", "")
        for index in range(count):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            number = len(rows) + 1
            local = f"{first}.{last}{number}".lower()
            rows.append(
                {
                    "account_id": f"v2acc{number:04d}{situation[:3]}",
                    "email": f"{local}@{domain}",
                    "provider": provider,
                    "authentication_type": auth,
                    "scopes": scopes,
                    "ews_host": host,
                    "grant_id": f"grant-{number:04d}" if status else "",
                    "grant_status": status,
                    "tenant": domain if provider != "gmail" else "",
                    "name": f"{first} {last}",
                    "locale": "en",
                    "external_id": f"user-{number:05d}",
                    "service_account": "true" if situation == "service_account" else "false",
                }
            )
            del index
    return rows


def demo_csv(rows: list[dict[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue().encode()


def emulator_seed(rows: list[dict[str, str]], callback_uri: str) -> dict[str, Any]:
    """What the Nylas import would have left: grants (valid or placeholders) and connectors."""
    grants = [
        {
            "id": row["grant_id"],
            "email": row["email"],
            "provider": "ews" if row["ews_host"] else "microsoft",
            "grant_status": row["grant_status"],
            "account_id": row["account_id"],
        }
        for row in rows
        if row["grant_id"]
    ]
    onprem = [row["email"] for row in rows if row["ews_host"] and row["service_account"] != "true"]
    return {
        "callback_uris": [callback_uri],
        "grants": grants,
        "connectors": [
            {
                "provider": "microsoft",
                "scope": GRAPH_SCOPES,
                "settings": {"client_id": AZURE_APP_ID, "tenant": "common"},
            },
            {"provider": "ews", "scope": ["ews.messages", "ews.calendars", "ews.contacts"]},
        ],
        "ews_passwords": dict.fromkeys(onprem, DEMO_PASSWORD),
        "ews_domains": ["fabrikam.com"],
    }
