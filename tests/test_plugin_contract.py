"""The contract test kit (portal.testing.contract) run against the three built-in plugins."""

from __future__ import annotations

from reauth_plugins.ews_password import EwsPasswordPlugin
from reauth_plugins.microsoft_graph import MicrosoftGraphPlugin
from reauth_plugins.microsoft_personal import MicrosoftPersonalPlugin

from portal.testing.contract import PluginContract, sample_account

GRACE = sample_account(
    "grace@contoso.com",
    "office365",
    authentication_type="oauth",
    scopes="email calendar",
    grant_id="g-grace",
    grant_status="invalid",
)
GRAPH_READY = sample_account(
    "linus@contoso.com",
    "office365",
    authentication_type="oauth",
    scopes="https://graph.microsoft.com/Mail.ReadWrite offline_access",
    grant_id="g-linus",
    grant_status="valid",
)
ALAN = sample_account(
    "alan@corp.example.org",
    "exchange",
    authentication_type="password",
    ews_host="mail.corp.example.org",
    grant_id="g-alan",
    grant_status="invalid",
)
EDSGER = sample_account("edsger@outlook.com", "outlook", authentication_type="oauth")
ADA = sample_account("ada@gmail.com", "gmail", authentication_type="oauth")


class TestMicrosoftGraphContract(PluginContract):
    plugin_class = MicrosoftGraphPlugin
    claimed_accounts = (GRACE, GRAPH_READY)
    unclaimed_accounts = (ALAN, EDSGER, ADA)


class TestEwsPasswordContract(PluginContract):
    plugin_class = EwsPasswordPlugin
    claimed_accounts = (ALAN,)
    unclaimed_accounts = (GRACE, EDSGER, ADA)


class TestMicrosoftPersonalContract(PluginContract):
    plugin_class = MicrosoftPersonalPlugin
    claimed_accounts = (EDSGER,)
    unclaimed_accounts = (GRACE, ALAN, ADA)
