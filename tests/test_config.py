"""create_app configuration: sources, precedence and one clear line per problem."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from reauth_plugins.ews_password import EwsPasswordPlugin
from reauth_plugins.microsoft_graph import MicrosoftGraphPlugin
from reauth_plugins.microsoft_personal import MicrosoftPersonalPlugin

from portal import create_app
from portal.config import ConfigError
from portal.plugins import PluginError, plugin_registry

BUILTINS = [MicrosoftGraphPlugin, EwsPasswordPlugin, MicrosoftPersonalPlugin]


def problems_of(config: dict | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        create_app(config, plugins=BUILTINS)
    problems = caught.value.problems
    assert str(caught.value).splitlines() == problems
    return problems


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("LINK_MAX_AGE", "abc", "REAUTH_LINK_MAX_AGE: expected a whole number, got 'abc'"),
        ("SMTP_PORT", "25x", "REAUTH_SMTP_PORT: expected a whole number"),
        ("NYLAS_REGION", "mars", "REAUTH_NYLAS_REGION: expected one of us, eu, got 'mars'"),
        ("BASE_URL", "ftp://x", "REAUTH_BASE_URL: expected an http(s) URL"),
        ("BASE_URL", "portal.example.com", "REAUTH_BASE_URL: expected an http(s) URL"),
        ("NYLAS_API_URI", "localhost:5050", "REAUTH_NYLAS_API_URI: expected an http(s) URL"),
        ("DATABASE_URL", "not a url", "REAUTH_DATABASE_URL: not a database URL"),
        (
            "DATABASE_URL",
            "postgresql+nosuchdriver://db/x",
            "REAUTH_DATABASE_URL: no installed database driver",
        ),
        ("DATABASE_URL", "mysql://db/x", "REAUTH_DATABASE_URL: no installed database driver"),
        ("SMTP_STARTTLS", "maybe", "REAUTH_SMTP_STARTTLS: expected true or false, got 'maybe'"),
        ("MAIL_BACKEND", "pigeon", "REAUTH_MAIL_BACKEND: expected one of smtp, console, file"),
        ("ENV", "staging", "REAUTH_ENV: expected one of development, production, testing"),
    ],
)
@pytest.mark.parametrize("source", ["environment", "mapping"])
def test_malformed_value_gives_one_clear_line(monkeypatch, key, value, expected, source):
    if source == "environment":
        monkeypatch.setenv(f"REAUTH_{key}", value)
        problems = problems_of({"ENV": "testing"} if key != "ENV" else None)
    else:
        problems = problems_of({"ENV": "testing", key: value} if key != "ENV" else {key: value})
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected), problems


def test_every_problem_is_reported_at_once(monkeypatch):
    monkeypatch.setenv("REAUTH_LINK_MAX_AGE", "abc")
    monkeypatch.setenv("REAUTH_NYLAS_REGION", "mars")
    monkeypatch.setenv("REAUTH_SMTP_STARTTLS", "perhaps")
    problems = problems_of()
    assert sorted(line.split(":")[0] for line in problems) == [
        "REAUTH_LINK_MAX_AGE",
        "REAUTH_NYLAS_REGION",
        "REAUTH_SMTP_STARTTLS",
    ]


@pytest.mark.parametrize("word", ["true", "TRUE", "1", "yes", "on"])
def test_booleans_accept_true(monkeypatch, word):
    monkeypatch.setenv("REAUTH_SMTP_STARTTLS", word)
    assert create_app({"ENV": "testing"}, plugins=BUILTINS).config["SMTP_STARTTLS"] is True


@pytest.mark.parametrize("word", ["false", "False", "0", "no", "off"])
def test_booleans_accept_false(monkeypatch, word):
    monkeypatch.setenv("REAUTH_SMTP_STARTTLS", word)
    assert create_app({"ENV": "testing"}, plugins=BUILTINS).config["SMTP_STARTTLS"] is False


def test_production_lists_every_missing_setting():
    problems = problems_of({"ENV": "production"})
    assert problems == [
        "REAUTH_SECRET_KEY: required when REAUTH_ENV=production",
        "REAUTH_NYLAS_API_KEY: required when REAUTH_ENV=production",
        "REAUTH_NYLAS_CLIENT_ID: required when REAUTH_ENV=production",
        "REAUTH_DATABASE_URL: required when REAUTH_ENV=production",
        "REAUTH_BASE_URL: must be an https URL in production",
    ]


def test_production_rejects_a_short_secret_key(tmp_path):
    problems = problems_of(
        {
            "ENV": "production",
            "SECRET_KEY": "short",
            "NYLAS_API_KEY": "k",
            "NYLAS_CLIENT_ID": "c",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
            "BASE_URL": "https://portal.example.com",
        }
    )
    assert problems == ["REAUTH_SECRET_KEY: use at least 32 characters"]


def test_complete_production_config_starts(tmp_path):
    app = create_app(
        {
            "ENV": "production",
            "SECRET_KEY": secrets.token_urlsafe(48),  # "s" * 40 is refused as not random
            "NYLAS_API_KEY": "k",
            "NYLAS_CLIENT_ID": "c",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'p.db'}",
            "BASE_URL": "https://portal.example.com/",
            "NYLAS_REGION": "EU",
        },
        plugins=BUILTINS,
    )
    assert app.config["NYLAS_API_URI"] == "https://api.eu.nylas.com"
    assert app.config["OAUTH_REDIRECT_URI"] == "https://portal.example.com/oauth/callback"
    assert app.config["MAIL_BACKEND"] == "smtp"


def test_development_defaults_stay_in_the_instance_folder(isolated_environment):
    app = create_app(plugins=BUILTINS)
    assert Path(app.instance_path) == isolated_environment
    assert app.config["DATABASE_URL"] == f"sqlite:///{isolated_environment / 'reauth.sqlite3'}"
    key_file = isolated_environment / "secret_key"
    assert key_file.read_text().strip() == app.config["SECRET_KEY"]
    assert len(app.config["SECRET_KEY"]) >= 32
    # The key survives a restart, so links stay valid.
    assert create_app(plugins=BUILTINS).config["SECRET_KEY"] == app.config["SECRET_KEY"]


def test_instance_file_is_read_and_environment_wins(isolated_environment, monkeypatch):
    (isolated_environment / "config.toml").write_text(
        'LINK_MAX_AGE = 60\nREAUTH_PRODUCT_NAME = "From the file"\nNYLAS_REGION = "eu"\n'
        "SMTP_PORT = 2525\n",
        encoding="utf-8",
    )
    app = create_app({"ENV": "testing"}, plugins=BUILTINS)
    assert app.config["LINK_MAX_AGE"] == 60
    assert app.config["PRODUCT_NAME"] == "From the file"
    assert app.config["SMTP_PORT"] == 2525

    monkeypatch.setenv("REAUTH_LINK_MAX_AGE", "120")
    monkeypatch.setenv("REAUTH_PRODUCT_NAME", "From the environment")
    app = create_app({"ENV": "testing", "SMTP_PORT": 25}, plugins=BUILTINS)
    assert app.config["LINK_MAX_AGE"] == 120
    assert app.config["PRODUCT_NAME"] == "From the environment"
    assert app.config["SMTP_PORT"] == 25  # the test mapping wins over everything
    assert app.config["NYLAS_REGION"] == "eu"


def test_bad_instance_file_is_one_line_naming_it(isolated_environment):
    path = isolated_environment / "config.toml"
    path.write_text("LINK_MAX_AGE = = 3\n", encoding="utf-8")
    problems = problems_of({"ENV": "testing"})
    assert len(problems) == 1
    assert problems[0].startswith(f"{path}: cannot read the config file")


def test_bad_value_in_instance_file_is_reported(isolated_environment):
    (isolated_environment / "config.toml").write_text('NYLAS_REGION = "mars"\n', encoding="utf-8")
    assert problems_of({"ENV": "testing"}) == [
        "REAUTH_NYLAS_REGION: expected one of us, eu, got 'mars'"
    ]


def test_unknown_plugin_in_the_enable_list_is_named():
    with pytest.raises(PluginError) as caught:
        create_app(
            {"ENV": "testing", "PLUGINS": "microsoft-graph, google-workspace"}, plugins=BUILTINS
        )
    assert "google-workspace" in str(caught.value)
    assert "microsoft-graph" in str(caught.value)  # the installed ones are listed to help


def test_enable_list_from_the_environment(monkeypatch):
    monkeypatch.setenv("REAUTH_PLUGINS", "ews-password,microsoft-personal")
    app = create_app({"ENV": "testing"}, plugins=BUILTINS)
    expected = sorted(
        [EwsPasswordPlugin, MicrosoftPersonalPlugin], key=lambda c: (c.priority, c.name)
    )
    assert plugin_registry(app).names == [cls.name for cls in expected]
    assert plugin_registry(app).installed == sorted(cls.name for cls in BUILTINS)


# -- the console script ---------------------------------------------------------------------


def reauth(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REAUTH_")}
    clean.update(
        REAUTH_INSTANCE_PATH=str(tmp_path / "instance"),
        REAUTH_DATABASE_URL=f"sqlite:///{tmp_path / 'cli.sqlite3'}",
    )
    clean.update(env)
    script = Path(sys.executable).with_name("reauth")
    return subprocess.run(
        [str(script), *args], env=clean, capture_output=True, text=True, timeout=60, check=False
    )


def test_console_script_prints_configuration_errors_and_exits_2(tmp_path):
    done = reauth(
        tmp_path,
        "plugins",
        "list",
        REAUTH_ENV="production",
        REAUTH_LINK_MAX_AGE="abc",
        REAUTH_BASE_URL="ftp://x",
    )
    assert done.returncode == 2
    lines = done.stderr.splitlines()
    assert lines == [
        "reauth: configuration error: REAUTH_BASE_URL: expected an http(s) URL such as "
        "https://portal.example.com, got 'ftp://x'",
        "reauth: configuration error: REAUTH_LINK_MAX_AGE: expected a whole number, got 'abc'",
    ]
    assert done.stdout == ""


def test_console_script_production_problems_one_line_each(tmp_path):
    done = reauth(tmp_path, "accounts", "stats", REAUTH_ENV="production")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 4  # DATABASE_URL is set by the helper
    assert all(line.startswith("reauth: configuration error: REAUTH_") for line in lines)


def test_console_script_bad_database_driver(tmp_path):
    done = reauth(tmp_path, "db", "upgrade", REAUTH_DATABASE_URL="postgresql+nosuchdriver://db/x")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("reauth: configuration error: REAUTH_DATABASE_URL:")


def test_console_script_unknown_plugin(tmp_path):
    done = reauth(tmp_path, "plugins", "list", REAUTH_PLUGINS="microsoft-graph,imap-basic")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("reauth: configuration error: REAUTH_PLUGINS")
    assert "imap-basic" in line


def test_console_script_plugins_list_uses_installed_entry_points(tmp_path):
    done = reauth(tmp_path, "plugins", "list", REAUTH_PLUGINS="ews-password")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("* ews-password")
    assert "enabled" in lines[0]
    assert "(Nylas provider: ews)" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == ["microsoft-graph", "microsoft-personal"]
    assert all(line.endswith("installed, disabled") for line in lines[1:])


def test_plugins_list_command(make_app, make_runner):
    runner = make_runner(make_app(PLUGINS="microsoft-graph,microsoft-personal"))
    result = runner.invoke(args=["plugins", "list"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 3
    by_name = {line[2:].split()[0]: line for line in lines}
    assert by_name["ews-password"].startswith("  ")
    assert by_name["ews-password"].endswith("installed, disabled")
    assert by_name["microsoft-graph"].startswith("* ")
    assert "Microsoft 365 (Graph) (Nylas provider: microsoft)" in by_name["microsoft-graph"]
    assert by_name["microsoft-personal"].startswith("* ")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REMINDER_DAYS", "3,x", "expected a whole number"),
        ("REMINDER_DAYS", "0", "positive whole days"),
        ("QUIET_HOURS", "22", "hours such as 22-7"),
        ("QUIET_HOURS", "25-7", "from 0 to 23"),
        ("QUIET_TIMEZONE", "Mars/Olympus", "unknown time zone"),
    ],
)
def test_campaign_settings_are_checked_with_one_clear_line(make_app, name, value, message):
    with pytest.raises(ConfigError) as raised:
        make_app(**{name: value})
    assert len(raised.value.problems) == 1
    assert raised.value.problems[0].startswith(f"REAUTH_{name}: ")
    assert message in raised.value.problems[0]


def test_campaign_settings_are_normalised(make_app):
    app = make_app(REMINDER_DAYS="12, 3,7,3", QUIET_HOURS=" 22-7 ", QUIET_TIMEZONE="Europe/Berlin")
    assert app.config["REMINDER_DAYS"] == [3, 7, 12]
    assert app.config["QUIET_HOURS"] == "22-7"
    assert make_app(REMINDER_DAYS="none").config["REMINDER_DAYS"] == []
