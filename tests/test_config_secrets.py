"""Production refuses the example file's placeholders and keys too weak to be random."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_SECRET_KEY

from portal.config import ConfigError, load_settings

ENV_EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "deploy" / "env.example"
# What docs/deploy/env.example leaves for the operator to fill in.
EXAMPLE_PLACEHOLDERS = {
    "REAUTH_SECRET_KEY",
    "REAUTH_NYLAS_API_KEY",
    "REAUTH_NYLAS_CLIENT_ID",
    "REAUTH_SMTP_PASSWORD",
    "REAUTH_APP_WEBHOOK_SECRET",
}
GOOD = {
    "REAUTH_SECRET_KEY": secrets.token_urlsafe(48),
    "REAUTH_NYLAS_API_KEY": "nyk_v0_" + secrets.token_urlsafe(40),
    "REAUTH_NYLAS_CLIENT_ID": "0d2f7c1e-5b7a-4c55-9a63-1c1ad3c5e0f4",
    "REAUTH_SMTP_PASSWORD": secrets.token_urlsafe(16),
    "REAUTH_APP_WEBHOOK_SECRET": secrets.token_urlsafe(48),
}


def example_environment() -> dict[str, str]:
    """docs/deploy/env.example as systemd reads it."""
    lines = ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
    pairs = [line.split("=", 1) for line in lines if line and not line.startswith("#")]
    return {name: value for name, value in pairs}


def problems_of(environ: dict[str, str], tmp_path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(tmp_path, environ=environ)
    return caught.value.problems


def test_the_example_file_with_real_values_starts(tmp_path):
    settings = load_settings(tmp_path, environ={**example_environment(), **GOOD})
    assert settings["SECRET_KEY"] == GOOD["REAUTH_SECRET_KEY"]


@pytest.mark.parametrize("name", sorted(EXAMPLE_PLACEHOLDERS))
def test_each_placeholder_of_the_example_file_is_refused(tmp_path, name):
    environ = {**example_environment(), **GOOD, name: example_environment()[name]}
    [problem] = problems_of(environ, tmp_path)
    assert problem.startswith(f"{name}: is the example file's placeholder")
    assert example_environment()[name] not in problem.removeprefix(name)  # value never shown


def test_the_untouched_example_file_lists_every_placeholder(tmp_path):
    problems = problems_of(example_environment(), tmp_path)
    assert sorted(problem.split(":")[0] for problem in problems) == sorted(EXAMPLE_PLACEHOLDERS)


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("change-me-to-64-random-characters", "is the example file's placeholder"),
        ("please-CHANGEME-" + secrets.token_urlsafe(32), "is the example file's placeholder"),
        (secrets.token_urlsafe(48) + "...", "is the example file's placeholder"),
        (secrets.token_urlsafe(23), "use at least 32 characters"),  # 31 characters
        ("s" * 64, "has too few distinct characters to be random"),
        ("abcabcabc" * 5, "has too few distinct characters to be random"),
        ("0123456" * 6, "has too few distinct characters to be random"),
    ],
)
@pytest.mark.parametrize("name", ["SECRET_KEY", "APP_WEBHOOK_SECRET"])
def test_weak_keys_are_refused(tmp_path, name, key, reason):
    environ = {**example_environment(), **GOOD, f"REAUTH_{name}": key}
    [problem] = problems_of(environ, tmp_path)
    assert problem.startswith(f"REAUTH_{name}: {reason}")
    assert key not in problem


@pytest.mark.parametrize(
    "key",
    [
        secrets.token_urlsafe(48),
        secrets.token_hex(16),  # 32 hex characters: 128 random bits
        secrets.token_urlsafe(24),  # exactly 32 characters
    ],
)
def test_random_keys_are_accepted(tmp_path, key):
    environ = {**example_environment(), **GOOD}
    environ.update(REAUTH_SECRET_KEY=key, REAUTH_APP_WEBHOOK_SECRET=key)
    environ["REAUTH_SECRET_KEY_FALLBACKS"] = f"{secrets.token_urlsafe(48)},{key}"
    settings = load_settings(tmp_path, environ=environ)
    assert settings["SECRET_KEY"] == settings["APP_WEBHOOK_SECRET"] == key


def test_an_unset_app_webhook_secret_is_fine(tmp_path):
    environ = {**example_environment(), **GOOD, "REAUTH_APP_WEBHOOK_SECRET": ""}
    assert load_settings(tmp_path, environ=environ)["APP_WEBHOOK_SECRET"] == ""


def test_a_weak_fallback_key_is_refused_by_its_position(tmp_path):
    fallbacks = f"{secrets.token_urlsafe(48)},change-me,{'x' * 40}"
    environ = {**example_environment(), **GOOD, "REAUTH_SECRET_KEY_FALLBACKS": fallbacks}
    assert problems_of(environ, tmp_path) == [
        "REAUTH_SECRET_KEY_FALLBACKS: entry 2 is the example file's placeholder; generate one "
        "with python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
    ]


def test_a_placeholder_webhook_secret_is_refused_by_its_position(tmp_path):
    secrets_list = f"{secrets.token_hex(32)},..."
    environ = {**example_environment(), **GOOD, "REAUTH_NYLAS_WEBHOOK_SECRETS": secrets_list}
    [problem] = problems_of(environ, tmp_path)
    assert problem.startswith("REAUTH_NYLAS_WEBHOOK_SECRETS: entry 2 is the example file's")


def test_issued_values_keep_their_own_format(tmp_path):
    """Nylas's and the relay's values are not ours to judge, past the placeholders."""
    environ = {**example_environment(), **GOOD}
    environ.update(REAUTH_SMTP_PASSWORD="short", REAUTH_NYLAS_WEBHOOK_SECRETS="aaaa")
    assert load_settings(tmp_path, environ=environ)["SMTP_PASSWORD"] == "short"


@pytest.mark.parametrize("environment", ["development", "testing"])
def test_outside_production_weak_and_test_keys_still_work(tmp_path, environment):
    for key in (TEST_SECRET_KEY, "change-me", "s" * 40, "dev"):
        environ = {"REAUTH_ENV": environment, "REAUTH_SECRET_KEY": key}
        environ.update(REAUTH_APP_WEBHOOK_SECRET=key, REAUTH_SECRET_KEY_FALLBACKS=key)
        assert load_settings(tmp_path, environ=environ)["SECRET_KEY"] == key


def test_the_console_script_stops_with_one_line_and_status_2(tmp_path):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("REAUTH_")}
    environ.update({**example_environment(), **GOOD})
    environ.update(
        REAUTH_SECRET_KEY="change-me-to-64-random-characters",
        REAUTH_INSTANCE_PATH=str(tmp_path / "instance"),
        REAUTH_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.sqlite3'}",
    )
    script = Path(sys.executable).with_name("reauth")
    done = subprocess.run(
        [str(script), "accounts", "stats"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "reauth: configuration error: REAUTH_SECRET_KEY: is the example file's placeholder; "
        "generate one with python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
    ]
