"""portal.accounts.emails agrees with email-validator on every address, fast path or not."""

from __future__ import annotations

import pytest
from email_validator import EmailNotValidError, validate_email

from portal.accounts.emails import InvalidEmail, normalize_email


def reference(address: str) -> str | None:
    """What email-validator (no DNS) says: the normalised, lowercased address, or None."""
    try:
        return validate_email(address, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


def ours(address: str) -> str | None:
    try:
        return normalize_email(address)
    except InvalidEmail:
        return None


def label(n: int, char: str = "a") -> str:
    return char * n


# Lengths around the limits: local part 64/65, whole address 254/255 (RFC 5321 as applied by
# email-validator), labels 63/64.
LONG_DOMAIN = ".".join([label(59, "d")] * 4) + ".com"  # 4*59 + 3 + 4 = 243 characters
LENGTH_CASES = [
    label(64) + "@contoso.com",
    label(65) + "@contoso.com",
    label(64, "A") + "@CONTOSO.COM",
    "x@" + label(63, "b") + ".com",
    "x@" + label(64, "b") + ".com",
    label(10) + "@" + LONG_DOMAIN,  # 254
    label(11) + "@" + LONG_DOMAIN,  # 255
    label(9) + "@" + LONG_DOMAIN,  # 253
    label(64) + "@" + ".".join([label(60, "e")] * 3) + ".co",  # 64 + 1 + 186
    label(64) + "@" + ".".join([label(61, "e")] * 3) + ".com",  # 255
]

VALID_LOOKING = [
    "ada@contoso.com",
    "Ada.Lovelace@Contoso.COM",
    "ADA@CONTOSO.COM",
    "first.middle.last@mail.corp.example.org",
    "user+tag@contoso.com",
    "user-name_1@sub-domain.contoso.co.uk",
    "o'brien@contoso.ie",
    "x@contoso.com",
    "1234567890@numbers.example.com",
    "!#$%&'*+/=?^_`{|}~-@contoso.com",
    "a.b-c_d@x-y.z.contoso.com",
    "user@xn--bcher-kva.example",  # IDN in ASCII form
    "USER@XN--BCHER-KVA.EXAMPLE",
    "user@bücher.example",  # IDN in Unicode form
    "user@BÜCHER.example",
    "josé@contoso.com",  # SMTPUTF8 local part
    "JOSÉ@contoso.com",
    "用户@例子.广告",
    "user@münchen.de",
    "ünïcödé@exämple.com",
    "e\u0301@contoso.com",  # combining accent: NFC normalisation
    "user@contoso.com.",  # trailing dot on the domain
    "user@sub.contoso.com",
    "edsger@outlook.com",
    "barbara@hotmail.co.uk",
]

INVALID_LOOKING = [
    "",
    "@",
    "plainaddress",
    "@contoso.com",
    "user@",
    "user@@contoso.com",
    "user@contoso@com",
    "user..name@contoso.com",
    ".user@contoso.com",
    "user.@contoso.com",
    "user@contoso..com",
    "user@.contoso.com",
    "user@-contoso.com",
    "user@contoso-.com",
    "user@contoso",
    "user@localhost",
    "user@example.test",
    "user@foo.invalid",
    "user@foo.localhost",
    "user@foo.local",
    "user@foo.example",  # special-use? let email-validator decide
    "user@example.com",
    "user@example.org",
    "user@foo.onion",
    "user@foo.arpa",
    "user@[127.0.0.1]",
    "user@[IPv6:::1]",
    '"quoted"@contoso.com',
    '"quoted local"@contoso.com',
    '"a@b"@contoso.com',
    "us er@contoso.com",
    " user@contoso.com",
    "user@contoso.com ",
    "user@contoso.com\n",
    "user\n@contoso.com",
    "user@contoso.com\r\nBcc: x@contoso.com",
    "user\x00@contoso.com",
    "user@con_toso.com",
    "user@contoso.c",
    "user@123.123.123.123",
    "user@contoso.com,other@contoso.com",
    "user(comment)@contoso.com",
    "<user@contoso.com>",
    "Ada <ada@contoso.com>",
    "user@contoso.com;",
    "user@con toso.com",
    "user@contoso.123",
    "user@xn--.com",
    "user@xn--zz-zzz.com",  # invalid punycode
    "us\u200ber@contoso.com",  # zero-width space
    "user@conto\u200bso.com",
    "user\u2028@contoso.com",
    "user@\uff43ontoso.com",  # fullwidth letter
    "ü@contoso.com\n",
]

CORPUS = VALID_LOOKING + INVALID_LOOKING + LENGTH_CASES


@pytest.mark.parametrize("address", CORPUS, ids=[repr(a)[:60] for a in CORPUS])
def test_agrees_with_email_validator(address):
    assert ours(address) == reference(address)


def test_the_corpus_covers_both_answers_and_both_paths():
    accepted = [a for a in CORPUS if reference(a) is not None]
    rejected = [a for a in CORPUS if reference(a) is None]
    assert len(accepted) >= 20
    assert len(rejected) >= 40
    assert any(not a.isascii() for a in accepted)  # the full path is exercised too
    assert any(len(a) == 254 for a in accepted)
    assert any(len(a) == 255 for a in rejected)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("Ada.Lovelace@Contoso.COM", "ada.lovelace@contoso.com"),
        ("USER@XN--BCHER-KVA.EXAMPLE", "user@bücher.example"),
        ("JOSÉ@Contoso.com", "josé@contoso.com"),
        ("e\u0301@contoso.com", "\u00e9@contoso.com"),
    ],
)
def test_normalised_form(address, expected):
    assert normalize_email(address) == expected


@pytest.mark.parametrize(
    "address", ["user@example.test", "user@foo.invalid", "root@localhost", "a..b@contoso.com"]
)
def test_rejection_gives_a_reason(address):
    with pytest.raises(InvalidEmail) as caught:
        normalize_email(address)
    assert str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_generated_corpus_agrees():
    """Many local parts x many domains: every fast-path shape against the reference."""
    locals_ = [
        "a",
        "A.b",
        "a+b",
        "a-b_c",
        "a.",
        ".a",
        "a..b",
        "ä",
        "a" * 64,
        "a" * 65,
        "x'y",
        "a b",
    ]
    domains = [
        "contoso.com",
        "CONTOSO.COM",
        "mail.contoso.co.uk",
        "contoso",
        "contoso..com",
        "-contoso.com",
        "example.test",
        "x.invalid",
        "localhost",
        "xn--bcher-kva.example",
        "bücher.example",
        "a" * 63 + ".com",
        "a" * 64 + ".com",
    ]
    mismatches = [
        (f"{local}@{domain}", ours(f"{local}@{domain}"), reference(f"{local}@{domain}"))
        for local in locals_
        for domain in domains
        if ours(f"{local}@{domain}") != reference(f"{local}@{domain}")
    ]
    assert mismatches == []
