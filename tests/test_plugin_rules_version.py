"""A plugin's declared `rules_version` is part of the row digest (docs/plugins.md).

The same file imported again after a plugin upgrade that changes claim() must re-classify:
the importer's digest knows each enabled plugin's rules version, not only its name.
"""

from __future__ import annotations

from pathlib import Path

from conftest import cli_runner, upgraded
from sqlalchemy import select

from portal.db import db
from portal.models import Account
from portal.plugins import AccountView, Claim, Plugin, Wording

ROWS = "account_id,email,provider,authentication_type\nacc-imap,ada@mail.example,imap,password\n"


class AcmeImapV1(Plugin):
    name = "acme-imap"
    display_name = "Acme IMAP"
    nylas_provider = "imap"

    def claim(self, account: AccountView) -> Claim | None:
        if (account.provider or "").lower() != "imap":
            return None
        return Claim("imap_password", needs_reauth=True, reason="IMAP password mailbox")

    def wording(self, account: AccountView) -> Wording:
        return Wording("Reconnect", "We moved.", "Sign in.", "Reconnect your mailbox")


class AcmeImapNewRulesSameVersion(AcmeImapV1):
    """claim() answers differently but the author forgot to bump rules_version."""

    def claim(self, account: AccountView) -> Claim | None:
        return Claim("imap_ready", needs_reauth=False, reason="IMAP already on v3")


class AcmeImapV2(AcmeImapNewRulesSameVersion):
    rules_version = "2"


def import_with(make_app, plugin_class: type[Plugin], path: Path) -> str:
    app = make_app(plugins=[plugin_class])
    result = cli_runner(upgraded(app)).invoke(args=["accounts", "import", str(path)])
    assert result.exit_code == 0, result.output
    return result.stdout


def category(make_app) -> str:
    app = make_app(plugins=[AcmeImapV1])
    with app.app_context():
        return db.session.scalars(select(Account.category)).one()


def test_a_rules_version_bump_reclassifies_on_reimport(make_app, tmp_path):
    path = tmp_path / "accounts.csv"
    path.write_text(ROWS, encoding="utf-8")
    assert "imported 1, updated 0, unchanged 0" in import_with(make_app, AcmeImapV1, path)
    assert category(make_app) == "imap_password"
    # Without a bump the digest is the same and the row counts as unchanged: why the bump exists.
    unbumped = import_with(make_app, AcmeImapNewRulesSameVersion, path)
    assert "imported 0, updated 0, unchanged 1" in unbumped
    assert category(make_app) == "imap_password"
    # The bump re-classifies the same file.
    assert "imported 0, updated 1, unchanged 0" in import_with(make_app, AcmeImapV2, path)
    assert category(make_app) == "imap_ready"
    # And once re-classified, the next import is unchanged again.
    assert "imported 0, updated 0, unchanged 1" in import_with(make_app, AcmeImapV2, path)
