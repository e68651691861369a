"""Outbound webhook secrets: whsec_ checked at start-up, rotation rules, `reauth webhooks new-secret`."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks import Webhook

from portal.config import ConfigError, load_settings, secret_problems

TESTING = {"ENV": "testing", "SECRET_KEY": "k" * 8 + "0123456789abcdefghijklmnopqrstuv"}
GOOD = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER = "whsec_" + base64.b64encode(bytes(range(1, 25))).decode()


def problems_of(tmp_path: Path, **config: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, {**TESTING, **config}, environ={})
    return caught.value.problems


def test_a_whsec_secret_and_previous_ones_load(tmp_path: Path) -> None:
    settings = load_settings(
        tmp_path,
        {**TESTING, "APP_WEBHOOK_SECRET": GOOD, "APP_WEBHOOK_PREVIOUS_SECRETS": f"{OTHER}"},
        environ={},
    )
    assert settings["APP_WEBHOOK_PREVIOUS_SECRETS"] == [OTHER]
    assert settings["APP_WEBHOOK_SIGNATURE"] == "standard"  # the default


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("whsec_not*base64!", "the part after whsec_ is not valid base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "holds 24 to 64 bytes, this one 5"),
        ("whsec_" + base64.b64encode(bytes(65)).decode(), "holds 24 to 64 bytes, this one 65"),
    ],
)
def test_a_malformed_whsec_secret_is_one_line_without_the_value(
    tmp_path: Path, secret: str, message: str
) -> None:
    [problem] = problems_of(tmp_path, APP_WEBHOOK_SECRET=secret)
    assert problem.startswith("REAUTH_APP_WEBHOOK_SECRET: ") and message in problem
    assert secret.removeprefix("whsec_") not in problem


def test_a_malformed_previous_secret_names_its_entry(tmp_path: Path) -> None:
    [problem] = problems_of(
        tmp_path, APP_WEBHOOK_SECRET=GOOD, APP_WEBHOOK_PREVIOUS_SECRETS=f"{OTHER},whsec_%%"
    )
    assert problem == (
        "REAUTH_APP_WEBHOOK_PREVIOUS_SECRETS: entry 2: the part after whsec_ is not valid base64"
    )


def test_previous_secrets_need_a_current_one_and_the_standard_scheme(tmp_path: Path) -> None:
    [alone] = problems_of(tmp_path, APP_WEBHOOK_PREVIOUS_SECRETS=OTHER)
    assert alone.startswith("REAUTH_APP_WEBHOOK_PREVIOUS_SECRETS: set only with")
    [legacy] = problems_of(
        tmp_path,
        APP_WEBHOOK_SECRET=GOOD,
        APP_WEBHOOK_PREVIOUS_SECRETS=OTHER,
        APP_WEBHOOK_SIGNATURE="legacy",
    )
    assert "the legacy scheme signs with one secret" in legacy


def test_an_unknown_scheme_is_refused(tmp_path: Path) -> None:
    [problem] = problems_of(tmp_path, APP_WEBHOOK_SECRET=GOOD, APP_WEBHOOK_SIGNATURE="v2")
    assert problem.startswith("REAUTH_APP_WEBHOOK_SIGNATURE: expected one of standard, legacy")


def test_new_secret_prints_a_whsec_secret_the_library_and_the_portal_accept(
    app: Any, make_runner: Callable[[Any], Any], tmp_path: Path
) -> None:
    runner = make_runner(app)
    first = runner.invoke(args=["webhooks", "new-secret"])
    second = runner.invoke(args=["webhooks", "new-secret"])
    assert first.exit_code == 0, first.output
    secret = first.output.strip()
    assert secret.startswith("whsec_") and secret != second.output.strip()
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    Webhook(secret)  # the receiver's library takes it as it is
    settings = load_settings(tmp_path, {**TESTING, "APP_WEBHOOK_SECRET": secret}, environ={})
    assert settings["APP_WEBHOOK_SECRET"] == secret


def test_production_applies_the_key_rules_to_current_and_previous_secrets(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, {**TESTING, "APP_WEBHOOK_SECRET": GOOD}, environ={})
    assert secret_problems(settings) == []  # a whsec_ secret of 32 bytes is random enough
    weak = {**settings, "APP_WEBHOOK_PREVIOUS_SECRETS": [OTHER, "s" * 40]}
    assert secret_problems(weak) == [
        "REAUTH_APP_WEBHOOK_PREVIOUS_SECRETS: entry 2 has too few distinct characters to be "
        "random; generate one with `reauth webhooks new-secret`"
    ]
