"""Scope vocabulary: v2 scope names, Microsoft Graph scopes, and the translation between them.

The v2 -> Graph table is derived from Nylas' Microsoft scope guides (no official 1:1 table
exists); docs/scopes.md gives the source of every row.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

GRAPH_RESOURCE_PREFIX = "https://graph.microsoft.com/"
# Scopes Nylas needs on every Microsoft grant, whatever the v2 account had.
GRAPH_BASELINE = ("offline_access", "User.Read")
IDENTITY_SCOPES = frozenset({"openid", "profile", "email", "offline_access"})
# Scopes a grant's answer is not checked for: Microsoft never lists offline_access as granted,
# and whether Nylas' truncated scope list carries the OpenID scopes or User.Read is not
# documented (docs/scopes.md, "Checking the granted scopes").
UNCHECKED_SCOPES = frozenset(scope.lower() for scope in IDENTITY_SCOPES | {"User.Read"})
# Graph delegated permissions a user cannot consent to alone: an administrator must approve.
ADMIN_CONSENT_SCOPES = frozenset({"Place.Read.All"})

V2_TO_GRAPH: dict[str, tuple[str, ...]] = {
    "email": ("Mail.ReadWrite", "Mail.Send"),
    "email.read_only": ("Mail.Read",),
    "email.metadata": ("Mail.Read",),
    "email.modify": ("Mail.ReadWrite",),
    "email.folders_and_labels": ("Mail.ReadWrite",),
    "email.drafts": ("Mail.ReadWrite",),
    "email.send": ("Mail.ReadWrite", "Mail.Send"),
    "calendar": ("Calendars.ReadWrite",),
    "calendar.read_only": ("Calendars.Read",),
    "calendar.free_busy": ("Calendars.Read",),
    "contacts": ("Contacts.ReadWrite",),
    "contacts.read_only": ("Contacts.Read", "People.Read"),
    "room_resources.read_only": ("Place.Read.All",),
}

# Graph delegated permissions look like Resource.Action[.Qualifier], e.g. Mail.ReadWrite.Shared.
GRAPH_PERMISSION = re.compile(r"^[A-Z][A-Za-z]+\.[A-Z][A-Za-z]+(\.[A-Z][A-Za-z]+)*$")
LEGACY_EXCHANGE_MARKERS = (
    "ews.accessasuser",
    "eas.accessasuser",
    "outlook.office365.com/",
    "outlook.office.com/",
)


def split_scopes(text: str | None) -> list[str]:
    """Split a scope field written with spaces, commas or both; keep order, drop repeats."""
    if not text:
        return []
    seen: dict[str, None] = {}
    for item in re.split(r"[\s,]+", text.strip()):
        if item:
            seen.setdefault(item, None)
    return list(seen)


def short_graph_name(scope: str) -> str:
    """`https://graph.microsoft.com/Mail.Read` -> `Mail.Read`; other scopes unchanged."""
    if scope.lower().startswith(GRAPH_RESOURCE_PREFIX):
        return scope[len(GRAPH_RESOURCE_PREFIX) :]
    return scope


def is_legacy_exchange_scope(scope: str) -> bool:
    lowered = scope.lower()
    return any(marker in lowered for marker in LEGACY_EXCHANGE_MARKERS)


def is_graph_scope(scope: str) -> bool:
    if is_legacy_exchange_scope(scope):
        return False  # EWS.AccessAsUser.All looks like a Graph name but is an Exchange scope
    short = short_graph_name(scope)
    return short in IDENTITY_SCOPES or bool(GRAPH_PERMISSION.match(short))


def is_on_graph(scopes: Iterable[str]) -> bool:
    """True when an account's granted scopes are Graph scopes and none are EWS/EAS ones."""
    scope_list = list(scopes)
    if not scope_list or any(is_legacy_exchange_scope(s) for s in scope_list):
        return False
    data_scopes = [s for s in scope_list if short_graph_name(s) not in IDENTITY_SCOPES]
    return bool(data_scopes) and all(is_graph_scope(s) for s in data_scopes)


class UnknownScopeError(ValueError):
    """A scope that is neither a known v2 scope nor a Graph scope."""


def translate(scopes: Iterable[str], *, with_baseline: bool = True) -> list[str]:
    """Map v2 scopes (or Graph scopes, kept as they are) to the Graph scopes v3 needs."""
    result: dict[str, None] = {}
    for scope in scopes:
        if scope in V2_TO_GRAPH:
            result.update(dict.fromkeys(V2_TO_GRAPH[scope]))
        elif is_legacy_exchange_scope(scope):
            continue  # EWS/EAS grants carry no information Graph can use
        elif is_graph_scope(scope):
            result.setdefault(short_graph_name(scope), None)
        else:
            raise UnknownScopeError(
                f"unknown scope {scope!r}: not a Nylas v2 scope or a Graph scope"
            )
    if with_baseline:
        result.update(dict.fromkeys(GRAPH_BASELINE))
    return list(result)


def dropped_legacy_scopes(scopes: Iterable[str]) -> list[str]:
    """The EWS/EAS scopes `translate` leaves out, in the order given."""
    return [scope for scope in scopes if is_legacy_exchange_scope(scope)]


def needing_admin_consent(scopes: Iterable[str]) -> list[str]:
    """The scopes among `scopes` that only a tenant administrator can approve."""
    return [scope for scope in scopes if short_graph_name(scope) in ADMIN_CONSENT_SCOPES]


def comparable_scope(scope: str) -> str:
    """The form two scope lists are compared in: short Graph name, lower case."""
    return short_graph_name(scope.strip()).lower()


def missing_scopes(required: Iterable[str], granted: Iterable[str]) -> list[str]:
    """Required scopes the granted list lacks, compared as Nylas reports them.

    Nylas answers Microsoft scopes in short ("truncated") form and without offline_access, so
    both lists are compared on short, lower-case names and the UNCHECKED_SCOPES are skipped.
    """
    have = {comparable_scope(scope) for scope in granted}
    wanted = {comparable_scope(scope) for scope in required} - UNCHECKED_SCOPES
    return sorted(wanted - have)
