"""Address validation and normalisation with email-validator, fast for the common case.

Importing a million rows calls this a million times. Plain ASCII dot-atom addresses (nearly
all of them) are checked with one regular expression plus a cached email-validator check of
their domain; everything else goes through `validate_email` in full. tests/test_emails.py
proves both paths give the same answers.
"""

from __future__ import annotations

import re
from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
SIMPLE_ADDRESS = re.compile(rf"({ATEXT}+(?:\.{ATEXT}+)*)@([A-Za-z0-9.-]+)")
MAX_LOCAL_LENGTH = 64
MAX_ADDRESS_LENGTH = 254


class InvalidEmail(ValueError):
    """The address is not a valid mailbox address; the message says why."""


@lru_cache(maxsize=65536)
def checked_domain(domain: str) -> str:
    """Validate a domain once (special-use names, syntax, length) and return it normalised."""
    try:
        return validate_email(f"a@{domain}", check_deliverability=False).domain
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from None


def normalize_email(address: str) -> str:
    """Return the address lowercased after validation; Microsoft mailboxes ignore case."""
    match = SIMPLE_ADDRESS.fullmatch(address)  # fullmatch: `$` would allow a final newline
    if match and len(match[1]) <= MAX_LOCAL_LENGTH and len(address) <= MAX_ADDRESS_LENGTH:
        domain = checked_domain(match[2].lower())
        return f"{match[1]}@{domain}".lower()
    return full_validation(address)


def full_validation(address: str) -> str:
    try:
        return validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise InvalidEmail(str(exc)) from None
