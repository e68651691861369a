"""Turn one source record into a validated, normalised import row (docs/import.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from portal.accounts.emails import InvalidEmail, normalize_email
from portal.models import GrantStatus

# Source spellings of each field; v2 management API objects use the later names.
ALIASES: dict[str, tuple[str, ...]] = {
    "account_id": ("account_id", "id"),
    "email": ("email", "email_address"),
    "provider": ("provider",),
    "authentication_type": ("authentication_type",),
    "scopes": ("scopes", "scope"),
    "ews_host": ("ews_host",),
    "grant_id": ("grant_id",),
    "grant_status": ("grant_status",),
    "tenant": ("tenant",),
    "name": ("name",),
    "locale": ("locale",),
    "external_id": ("external_id",),
    "service_account": ("service_account",),
    "sync_state": ("sync_state",),
    "billing_state": ("billing_state",),
}
REQUIRED = ("account_id", "email", "provider")
MAX_LENGTHS = {
    "account_id": 128,
    "email": 320,
    "provider": 64,
    "authentication_type": 32,
    "ews_host": 255,
    "grant_id": 128,
    "grant_status": 32,
    "tenant": 255,
    "name": 256,
    "locale": 35,
    "external_id": 255,
    "sync_state": 64,
    "billing_state": 64,
    "scopes": 4096,
}
FORBIDDEN_CHARACTERS = re.compile("[\x00-\x1f\x7f\u2028\u2029]")
TRUE_WORDS = frozenset({"true", "1", "yes", "y"})
FALSE_WORDS = frozenset({"false", "0", "no", "n", ""})
AUTH_TYPES = {"oauth": "oauth", "token": "oauth", "password": "password"}
# What the v2 export may say of the placeholder grant (deleted is the portal's own flag).
GRANT_STATUSES = frozenset({GrantStatus.VALID, GrantStatus.INVALID})


class RowError(ValueError):
    """The row cannot be imported; the message is shown with its line number."""


@dataclass(slots=True)
class ImportedRow:
    """A validated row. Attribute names follow portal.plugins.AccountView."""

    account_id: str
    email: str
    provider: str
    authentication_type: str | None
    scopes: str | None
    ews_host: str | None
    grant_id: str | None
    grant_status: str | None
    tenant: str | None
    name: str | None
    locale: str | None
    external_id: str | None
    service_account: bool
    sync_state: str | None
    billing_state: str | None


def missing_columns(columns: list[str]) -> str | None:
    """Name the required fields a header lacks (any accepted spelling counts)."""
    present = set(columns)
    missing = [name for name in REQUIRED if not present.intersection(ALIASES[name])]
    if not missing:
        return None
    return f"missing required column(s): {', '.join(missing)} (found: {', '.join(columns)})"


def pick(fields: dict[str, Any], name: str) -> Any:
    for key in ALIASES[name]:
        value = fields.get(key)
        if value is not None and value != "":
            return value
    return None


@lru_cache(maxsize=256)
def field_plan(keys: tuple[str, ...]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """For records with these keys: each text field and the source keys that spell it.

    A CSV file has one set of keys, so the alias search is done once per file, not per row.
    """
    present = set(keys)
    return tuple(
        (name, tuple(key for key in ALIASES[name] if key in present)) for name in MAX_LENGTHS
    )


def text_fields(fields: dict[str, Any]) -> dict[str, str | None]:
    """Every text field of a record, stripped, None when empty, length-checked."""
    text: dict[str, str | None] = {}
    for name, keys in field_plan(tuple(fields)):
        value = None
        for key in keys:
            value = fields[key]
            if value is not None and value != "":
                break
        if value.__class__ is str:  # the common case, kept cheap
            stripped = value.strip()
            if len(stripped) > MAX_LENGTHS[name]:
                raise RowError(f"{name}: longer than {MAX_LENGTHS[name]} characters")
            text[name] = stripped or None
        elif value is None:  # a column the file does not have
            text[name] = None
        else:
            text[name] = as_text(name, value)
    return text


def as_text(name: str, value: Any) -> str | None:
    """Strip a field; None when empty. Control characters are checked once per row."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, list):
        text = " ".join(str(item) for item in value).strip()
    elif isinstance(value, dict | bool):
        raise RowError(f"{name}: expected text, found {type(value).__name__}")
    else:
        text = str(value).strip()
    if not text:
        return None
    if len(text) > MAX_LENGTHS[name]:
        raise RowError(f"{name}: longer than {MAX_LENGTHS[name]} characters")
    return text


def account_id_problem(account_id: str) -> str:
    """Explain why an account id is refused, in the words parse_row would use."""
    try:
        reject_control_characters({"account_id": account_id})
        as_text("account_id", account_id)
    except RowError as exc:
        return str(exc)
    return "account_id: invalid"


def reject_control_characters(text: dict[str, str | None]) -> None:
    joined = "".join(filter(None, text.values()))
    # Every forbidden character is unprintable, and isprintable() scans twice as fast as
    # the regular expression: only a row that fails it is searched.
    if joined.isprintable() or not FORBIDDEN_CHARACTERS.search(joined):
        return
    for name, value in text.items():
        if value and FORBIDDEN_CHARACTERS.search(value):
            raise RowError(f"{name}: contains a line break or control character")


def as_bool(name: str, value: Any) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    word = str(value).strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise RowError(f"{name}: expected true or false, found {value!r}")


def parse_row(fields: dict[str, Any]) -> ImportedRow:
    """Validate and normalise one record, or raise RowError naming the first problem."""
    text = text_fields(fields)
    reject_control_characters(text)
    for name in REQUIRED:
        if text[name] is None:
            raise RowError(f"{name}: required and empty")
    try:
        email = normalize_email(text["email"] or "")
    except InvalidEmail as exc:
        raise RowError(f"email: {text['email']!r} is not a valid address: {exc}") from None
    auth = text["authentication_type"]
    if auth is not None:
        auth = AUTH_TYPES.get(auth.lower())
        if auth is None:
            raise RowError("authentication_type: expected oauth or password")
    grant_status = text["grant_status"].lower() if text["grant_status"] else None
    if grant_status is not None and grant_status not in GRANT_STATUSES:
        raise RowError("grant_status: expected valid or invalid")
    return ImportedRow(
        account_id=text["account_id"] or "",
        email=email,
        provider=(text["provider"] or "").lower(),
        authentication_type=auth,
        scopes=text["scopes"],
        ews_host=text["ews_host"].lower() if text["ews_host"] else None,
        grant_id=text["grant_id"],
        grant_status=grant_status,
        tenant=text["tenant"].lower() if text["tenant"] else None,  # ids and domains ignore case
        name=text["name"],
        locale=text["locale"],
        external_id=text["external_id"],
        service_account=as_bool("service_account", pick(fields, "service_account")),
        sync_state=text["sync_state"],
        billing_state=text["billing_state"],
    )
