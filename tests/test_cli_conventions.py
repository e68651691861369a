"""`reauth --help`, `--version` and the schema check, run as the installed console script."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import portal

# The product's commands: what `reauth --help` must list, no more (docs/development.md).
PRODUCT_COMMANDS = {
    "accounts",
    "admin",
    "api-token",
    "campaigns",
    "db",
    "demo",
    "emulator",
    "invite",
    "nylas",
    "plugins",
    "run",
    "scopes",
    "tenants",
    "webhooks",
    "worker",
}


def reauth(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = {
        key: value for key, value in os.environ.items() if not key.startswith(("REAUTH_", "FLASK_"))
    }
    environment.update({"REAUTH_INSTANCE_PATH": str(cwd / "instance"), **(env or {})})
    return subprocess.run(
        [sys.executable, "-c", "from portal.cli import main; main()", *args],
        cwd=cwd,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def listed_commands(help_text: str) -> set[str]:
    """The names in the `Commands:` section of click's help."""
    section = help_text.split("\nCommands:\n", 1)[1]
    return {match.group(1) for match in re.finditer(r"^  (\S+)", section, re.MULTILINE)}


def test_help_lists_only_the_product_commands(tmp_path: Path) -> None:
    result = reauth("--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert listed_commands(result.stdout) == PRODUCT_COMMANDS
    assert "dotenv" not in result.stdout
    assert "--env-file" not in result.stdout
    assert "limiter" not in result.stdout


def test_flask_and_extension_commands_are_not_reachable(tmp_path: Path) -> None:
    for command in ("limiter", "shell", "routes"):
        result = reauth(command, "--help", cwd=tmp_path)
        assert result.returncode == 2
        assert f"No such command '{command}'" in result.stderr


def test_version_is_the_products_from_package_metadata(tmp_path: Path) -> None:
    result = reauth("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"reauth {version('reauth-portal')}"
    assert portal.__version__ == version("reauth-portal")


EXAMPLE_ACCOUNTS = Path(__file__).parent.parent / "examples" / "accounts.csv"


def test_import_before_db_upgrade_says_to_upgrade(tmp_path: Path) -> None:
    result = reauth("accounts", "import", str(EXAMPLE_ACCOUNTS), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "the database schema is missing" in result.stderr
    assert "run `reauth db upgrade`" in result.stderr


def test_a_schema_behind_head_names_both_revisions(tmp_path: Path) -> None:
    from portal import migrate

    head = migrate.head_revision("sqlite://")
    assert reauth("db", "upgrade", "--revision", "0006", cwd=tmp_path).returncode == 0
    result = reauth("accounts", "import", str(EXAMPLE_ACCOUNTS), cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"at revision 0006, behind head {head}: run `reauth db upgrade`" in result.stderr

    assert reauth("db", "upgrade", cwd=tmp_path).returncode == 0
    result = reauth("accounts", "import", str(EXAMPLE_ACCOUNTS), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
