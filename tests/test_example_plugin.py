"""The worked example of docs/plugins.md: a third-party Google plugin in its own distribution.

`tests/example_plugin/` is installed with pip into a temporary target directory; the `reauth`
console script then runs in a subprocess with that directory on PYTHONPATH, so the portal finds
the plugin through its `reauth_portal.plugins` entry point exactly as it would find a plugin
installed from PyPI, and the entry points of this test process stay untouched. In-process, the
plugin class is passed explicitly, like every other test does: through the contract kit and an
end-to-end sign-in against the emulator.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from example_support import load_example

from portal.plugins import ENTRY_POINT_GROUP
from portal.testing.contract import PluginContract, sample_account

EXAMPLE_DIR = Path(__file__).parent / "example_plugin"
ACCOUNTS_CSV = (
    "account_id,email,provider,authentication_type,scopes,grant_id,grant_status\n"
    "v2-ada,ada@gmail.com,gmail,oauth,email,g-ada,invalid\n"
    "v2-grace,grace@contoso.com,office365,oauth,email calendar,g-grace,invalid\n"
)
# Signs that pip could not reach an index for the build backend (setuptools) of the example.
OFFLINE_MARKERS = ("NewConnectionError", "No matching distribution found", "Network is unreachable")


example = load_example(EXAMPLE_DIR, "reauth_google_example")
GoogleExamplePlugin = example.GoogleExamplePlugin
ADA = sample_account(
    "ada@gmail.com",
    "gmail",
    authentication_type="oauth",
    scopes="email",
    grant_id="g-ada",
    grant_status="invalid",
)
WORKSPACE = sample_account("Linus@Example.org", "google", authentication_type="oauth")
READY = sample_account(
    "ready@gmail.com",
    "gmail",
    scopes="https://www.googleapis.com/auth/gmail.modify",
    grant_id="g-ready",
    grant_status="valid",
)


class TestGoogleExampleContract(PluginContract):
    plugin_class = GoogleExamplePlugin
    claimed_accounts = (ADA, WORKSPACE, READY)
    unclaimed_accounts = (
        sample_account("grace@contoso.com", "office365", grant_id="g-grace"),
        sample_account("edsger@outlook.com", "outlook"),
        sample_account("someone@yahoo.com", "imap"),
    )


# -- in-process: the flow with the class passed explicitly ----------------------------------


def test_example_plugin_completes_the_flow_against_the_emulator(plugin_flow, nylas_emulator):
    report = plugin_flow(GoogleExamplePlugin, ADA)

    assert report.auth_params["provider"] == "google"
    assert report.auth_params["login_hint"] == "ada@gmail.com"
    assert report.auth_params["scope"] == "https://www.googleapis.com/auth/gmail.modify"
    assert (report.account_status, report.outcome, report.grant_id) == (
        "completed",
        "updated",
        "g-ada",
    )
    grant = nylas_emulator.state.grants["g-ada"]
    assert grant["grant_status"] == "valid"
    assert grant["provider"] == "google"


def test_gmail_addresses_match_without_dots_and_tags():
    plugin = GoogleExamplePlugin()
    for signed_in in ("a.d.a@gmail.com", "ADA+work@googlemail.com"):
        result = example.AuthResult("g", signed_in, "google", example.GMAIL_SCOPES)
        assert plugin.verify(ADA, result).accepted
    other = example.AuthResult("g", "adam@gmail.com", "google", example.GMAIL_SCOPES)
    assert plugin.verify(ADA, other).reason == "mailbox_mismatch"
    too_few = example.AuthResult("g", "ada@gmail.com", "google", ["email"])
    assert plugin.verify(ADA, too_few).reason.startswith("missing_scopes:")


# -- installed: found through its entry point by the `reauth` console script ----------------


def pip_install(source: Path, target: Path) -> subprocess.CompletedProcess[str]:
    """Install without dependencies; build offline when the venv can, else fetch setuptools."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target"]
    command += [str(target), str(source)]
    if importlib.util.find_spec("wheel") is not None:
        command.insert(4, "--no-build-isolation")
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def installed_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding the installed example distribution (module and dist-info)."""
    source = tmp_path_factory.mktemp("source") / "example_plugin"
    shutil.copytree(EXAMPLE_DIR, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = tmp_path_factory.mktemp("site")
    done = pip_install(source, target)
    if done.returncode != 0 and any(m in done.stderr for m in OFFLINE_MARKERS):
        pytest.skip(f"pip cannot fetch the build backend: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stderr
    entry_points = next(target.glob("*.dist-info")) / "entry_points.txt"
    assert f"[{ENTRY_POINT_GROUP}]" in entry_points.read_text()
    return target


def reauth(
    workdir: Path, site: Path | None, *args: str, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run the console script in a fresh process; `site` (if any) goes on PYTHONPATH."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("REAUTH_")}
    clean.pop("PYTHONPATH", None)
    if site is not None:
        clean["PYTHONPATH"] = str(site)
    clean.update(
        REAUTH_INSTANCE_PATH=str(workdir / "instance"),
        REAUTH_DATABASE_URL=f"sqlite:///{workdir / 'portal.sqlite3'}",
        **env,
    )
    script = Path(sys.executable).with_name("reauth")
    return subprocess.run(
        [str(script), *args], env=clean, capture_output=True, text=True, timeout=120, check=False
    )


def listed(output: str) -> dict[str, str]:
    """Map each plugin of `reauth plugins list` to 'enabled' or 'disabled'."""
    rows = (line.lstrip("* ").split() for line in output.splitlines() if line.strip())
    return {row[0]: "enabled" if row[1] == "enabled" else "disabled" for row in rows}


def test_installed_example_is_listed_and_enabled_by_default(installed_example, tmp_path):
    done = reauth(tmp_path, installed_example, "plugins", "list")

    assert done.returncode == 0, done.stderr
    assert listed(done.stdout) == {
        "ews-password": "enabled",
        "google-example": "enabled",
        "microsoft-graph": "enabled",
        "microsoft-personal": "enabled",
    }
    assert "Google (Gmail, Workspace) (Nylas provider: google)" in done.stdout


def test_enable_list_picks_the_example_and_leaves_others_installed(installed_example, tmp_path):
    enabled = {"REAUTH_PLUGINS": "google-example,microsoft-graph"}
    done = reauth(tmp_path, installed_example, "plugins", "list", **enabled)

    assert done.returncode == 0, done.stderr
    assert listed(done.stdout) == {
        "ews-password": "disabled",
        "google-example": "enabled",
        "microsoft-graph": "enabled",
        "microsoft-personal": "disabled",
    }


def import_and_stats(workdir: Path, site: Path | None, **env: str) -> dict:
    (workdir / "accounts.csv").write_text(ACCOUNTS_CSV)
    for args in (("db", "upgrade"), ("accounts", "import", str(workdir / "accounts.csv"))):
        done = reauth(workdir, site, *args, **env)
        assert done.returncode == 0, done.stderr
    done = reauth(workdir, site, "accounts", "stats", "--json", **env)
    assert done.returncode == 0, done.stderr
    stats: dict = json.loads(done.stdout)
    return stats


def test_imported_gmail_account_is_classified_to_the_example(installed_example, tmp_path):
    enabled = {"REAUTH_PLUGINS": "google-example,microsoft-graph"}
    stats = import_and_stats(tmp_path, installed_example, **enabled)

    assert stats["by_plugin"] == {"google-example": 1, "microsoft-graph": 1}
    assert stats["by_category"] == {"google_consent": 1, "graph_consent": 1}
    assert stats["needs_reauth"] == 2


def test_without_the_example_a_gmail_account_is_not_handled(tmp_path):
    stats = import_and_stats(tmp_path, None)

    assert stats["by_category"] == {"graph_consent": 1, "not_handled": 1}
    assert stats["by_status"].get("unsupported") == 1
