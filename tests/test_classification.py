"""Every classification rule (plugins/microsoft_rules.py, portal/accounts/classify.py).

Rows go through portal.accounts.rows.parse_row first, exactly as an import would, so case
folding and normalisation are part of what is tested.
"""

from __future__ import annotations

from typing import Any

import pytest
from reauth_plugins import microsoft_rules
from reauth_plugins.ews_password import EwsPasswordPlugin
from reauth_plugins.microsoft_graph import MicrosoftGraphPlugin
from reauth_plugins.microsoft_personal import MicrosoftPersonalPlugin
from sqlalchemy import func, select

from portal.accounts.classify import (
    NOT_HANDLED_CATEGORY,
    SERVICE_ACCOUNT_CATEGORY,
    classification_salt,
    classify,
)
from portal.accounts.rows import ImportedRow, parse_row
from portal.db import db
from portal.models import Account, AccountStatus
from portal.plugins import build_registry

ALL_PLUGINS = (MicrosoftGraphPlugin, EwsPasswordPlugin, MicrosoftPersonalPlugin)
READY, CONSENT, ONPREM, PERSONAL = "graph_ready", "graph_consent", "exchange_onprem", "personal"
PLUGIN_OF = {
    READY: "microsoft-graph",
    CONSENT: "microsoft-graph",
    ONPREM: "ews-password",
    PERSONAL: "microsoft-personal",
}
GRAPH_SCOPES = "Mail.ReadWrite Mail.Send Calendars.ReadWrite Contacts.ReadWrite offline_access"
EWS_SCOPE = "https://outlook.office365.com/EWS.AccessAsUser.All"


def row(**fields: Any) -> ImportedRow:
    fields.setdefault("account_id", "5x2b9ksq8w1m0c7d3e4f")
    fields.setdefault("sync_state", "running")
    fields.setdefault("billing_state", "paid")
    return parse_row({key: value for key, value in fields.items() if value is not None})


def registry(*classes: type):
    return build_registry([], list(classes or ALL_PLUGINS))


def decide(account: ImportedRow, *classes: type):
    return classify(account, registry(*classes))


def assert_situation(account: ImportedRow, category: str) -> None:
    decided = decide(account)
    assert (decided.category, decided.plugin) == (category, PLUGIN_OF[category]), decided
    expected_status = AccountStatus.NOT_REQUIRED if category == READY else AccountStatus.NEW
    assert decided.status is expected_status
    assert decided.reason == microsoft_rules.SITUATION_REASONS[microsoft_rules.Situation(category)]


# -- C4: personal Microsoft accounts -------------------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        "edsger@outlook.com",
        "Edsger@OUTLOOK.COM",
        "barbara.liskov@hotmail.co.uk",
        "BARBARA@Hotmail.Co.Uk",
        "juan@live.com.mx",
        "joao@outlook.com.br",
        "marie@hotmail.fr",
        "hans@outlook.de",
        "anna@live.co.uk",
        "taro@hotmail.co.jp",
        "bill@msn.com",
        "old.timer@windowslive.com",
        "legacy@passport.com",
        "kim@live.com",
        "lee@hotmail.com.au",
    ],
)
@pytest.mark.parametrize("provider", ["office365", "exchange", "eas", "outlook", "hotmail"])
def test_consumer_domains_are_personal_whatever_the_v2_provider(email, provider):
    account = row(email=email, provider=provider, authentication_type="oauth")
    assert account.email == email.lower()
    assert_situation(account, PERSONAL)


@pytest.mark.parametrize(
    "email",
    [
        "someone@outlook.contoso.com",  # a company's own host named outlook
        "someone@mail.hotmail.com",  # subdomain of a consumer domain is not the consumer domain
        "someone@hotmail.com.contoso.net",
        "someone@myhotmail.com",
        "someone@live.contoso.com",
        "someone@outlookmail.com",
    ],
)
def test_lookalike_and_sub_domains_are_not_personal(email):
    assert_situation(row(email=email, provider="office365", authentication_type="oauth"), CONSENT)


@pytest.mark.parametrize("provider", ["outlook", "hotmail", "Outlook", "HOTMAIL"])
def test_consumer_v2_providers_are_personal_even_on_a_custom_domain(provider):
    # Outlook.com lets people bring their own domain; the v2 provider still says consumer.
    account = row(email="me@my-family-domain.example.org", provider=provider)
    assert_situation(account, PERSONAL)


def test_personal_accounts_create_a_new_grant_with_graph_scopes():
    plugin = MicrosoftPersonalPlugin()
    account = row(email="juan@live.com.mx", provider="hotmail", scopes="email calendar")
    assert plugin.creates_new_grant is True
    request = plugin.hosted_auth_request(account)
    assert request.provider == "microsoft"
    assert request.login_hint == "juan@live.com.mx"
    assert set(request.scopes) == {
        "Mail.ReadWrite",
        "Mail.Send",
        "Calendars.ReadWrite",
        "offline_access",
        "User.Read",
    }


def test_every_consumer_domain_in_the_data_file_is_personal():
    domains = microsoft_rules.consumer_domains()
    assert {"outlook.com", "hotmail.com", "live.com", "msn.com", "hotmail.co.uk"} <= domains
    assert len(domains) > 50
    assert all(domain == domain.strip().lower() and "@" not in domain for domain in domains)
    for domain in sorted(domains):
        assert_situation(row(email=f"user@{domain}", provider="office365"), PERSONAL)


# -- C3: on-premises Exchange vs Office 365 hosts -------------------------------------------


@pytest.mark.parametrize(
    "ews_host",
    [
        "mail.corp.example.org",
        "EXCHANGE.Corp.Example.Org",
        "https://mail.corp.example.org/EWS/Exchange.asmx",
        "owa.fabrikam.example:443",
        "office365.contoso.example",  # an on-premises server named after the cloud
        "outlook.office365.com.attacker.example",  # suffix tricks
        "evil-outlook.com",
        "10.0.0.25",
    ],
)
@pytest.mark.parametrize("provider", ["exchange", "ews", "eas"])
def test_password_accounts_on_premises_hosts_are_exchange_onprem(ews_host, provider):
    account = row(
        email="alan@corp.example.org",
        provider=provider,
        authentication_type="password",
        ews_host=ews_host,
    )
    assert_situation(account, ONPREM)


@pytest.mark.parametrize(
    "ews_host",
    [
        "outlook.office365.com",
        "OUTLOOK.OFFICE365.COM",
        "outlook.office365.com.",
        "https://outlook.office365.com/EWS/Exchange.asmx",
        "outlook.office.com",
        "BN6PR01MB1234.namprd01.prod.outlook.com",  # a mailbox pod host
        "pod51041.outlook.com",
        "outlook.office365.us",  # GCC High
        "webmail.apps.mil",  # DoD
        "partner.outlook.cn",  # 21Vianet
    ],
)
@pytest.mark.parametrize("provider", ["exchange", "eas", "ews"])
def test_password_accounts_on_office365_hosts_need_graph_consent(ews_host, provider):
    # Office 365 dropped Basic Auth: these users sign in with Microsoft OAuth instead.
    account = row(
        email="margaret@contoso.com",
        provider=provider,
        authentication_type="password",
        ews_host=ews_host,
    )
    assert_situation(account, CONSENT)


@pytest.mark.parametrize("provider", ["exchange", "ews", "eas"])
def test_password_account_without_a_host_is_on_premises(provider):
    account = row(
        email="katherine@corp.example.org", provider=provider, authentication_type="password"
    )
    assert_situation(account, ONPREM)


@pytest.mark.parametrize(
    "email",
    ["linus@fabrikam.onmicrosoft.com", "Linus@Fabrikam.OnMicrosoft.com", "x@agency.onmicrosoft.us"],
)
def test_password_account_on_a_tenant_domain_is_office365(email):
    account = row(email=email, provider="exchange", authentication_type="password")
    assert_situation(account, CONSENT)


def test_office365_provider_with_password_and_no_host_is_office365():
    account = row(email="grace@contoso.com", provider="office365", authentication_type="password")
    assert_situation(account, CONSENT)


def test_ews_plugin_asks_for_the_ews_provider():
    plugin = EwsPasswordPlugin()
    account = row(email="alan@corp.example.org", provider="ews", authentication_type="password")
    assert plugin.hosted_auth_request(account).provider == "ews"
    assert plugin.claim(row(email="a@contoso.com", provider="office365")) is None


# -- C1/C2: Office 365 token accounts --------------------------------------------------------


@pytest.mark.parametrize("provider", ["eas", "exchange", "EAS", "Exchange"])
def test_office365_account_with_eas_or_exchange_provider_and_token_auth(provider):
    account = row(
        email="Linus@Fabrikam.onmicrosoft.com",
        provider=provider,
        authentication_type="oauth",
        scopes="email.read_only,calendar",
        grant_status="invalid",
        tenant="fabrikam.onmicrosoft.com",
    )
    assert account.provider == provider.lower()
    assert_situation(account, CONSENT)


@pytest.mark.parametrize(
    "scopes",
    [
        GRAPH_SCOPES,
        "Mail.Read offline_access",
        "https://graph.microsoft.com/Mail.ReadWrite https://graph.microsoft.com/Calendars.Read",
        "Mail.ReadWrite,Calendars.ReadWrite,offline_access",
        "openid profile email offline_access Mail.ReadWrite.Shared",
    ],
)
def test_token_account_on_graph_scopes_is_ready(scopes):
    account = row(
        email="ada.lovelace@contoso.com",
        provider="office365",
        authentication_type="oauth",
        scopes=scopes,
        grant_status="valid",
    )
    assert_situation(account, READY)
    assert decide(account).status is AccountStatus.NOT_REQUIRED


@pytest.mark.parametrize(
    "scopes",
    [
        EWS_SCOPE,
        "https://outlook.office.com/EAS.AccessAsUser.All",
        f"Mail.ReadWrite {EWS_SCOPE}",  # one legacy scope is enough to need consent
        "email calendar contacts",  # v2 names say nothing about the Graph consent
        "openid offline_access",  # identity only: no data scopes
        None,  # unknown
    ],
)
def test_token_account_not_on_graph_scopes_needs_consent(scopes):
    account = row(
        email="grace@contoso.com", provider="office365", authentication_type="oauth", scopes=scopes
    )
    assert_situation(account, CONSENT)


def test_invalid_grant_forces_consent_even_on_graph_scopes():
    account = row(
        email="ada@contoso.com",
        provider="office365",
        authentication_type="oauth",
        scopes=GRAPH_SCOPES,
        grant_id="g-ada-0001",
        grant_status="INVALID",
    )
    assert account.grant_status == "invalid"
    assert_situation(account, CONSENT)


@pytest.mark.parametrize(
    ("grant_status", "category"), [(None, READY), ("valid", READY), ("invalid", CONSENT)]
)
def test_graph_provider(grant_status, category):
    account = row(email="ada@contoso.com", provider="graph", grant_status=grant_status)
    assert_situation(account, category)


def test_token_is_a_synonym_of_oauth():
    account = row(
        email="ada@contoso.com",
        provider="office365",
        authentication_type="token",
        scopes=GRAPH_SCOPES,
    )
    assert account.authentication_type == "oauth"
    assert_situation(account, READY)


def test_graph_plugin_asks_for_translated_scopes():
    plugin = MicrosoftGraphPlugin()
    account = row(
        email="grace@contoso.com", provider="office365", scopes="email.read_only contacts"
    )
    assert list(plugin.required_scopes(account)) == [
        "Mail.Read",
        "Contacts.ReadWrite",
        "offline_access",
        "User.Read",
    ]
    unknown = row(email="grace@contoso.com", provider="office365", scopes="some.custom.scope")
    assert list(plugin.required_scopes(unknown)) == ["offline_access", "User.Read"]
    request = plugin.hosted_auth_request(account)
    assert (request.provider, request.login_hint) == ("microsoft", "grace@contoso.com")


# -- outside every plugin --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "email"),
    [
        ("gmail", "someone@gmail.com"),
        ("imap", "someone@fastmail.example"),
        ("icloud", "someone@icloud.com"),
        ("yahoo", "someone@yahoo.com"),
        ("imap", "someone@hotmail.com"),  # IMAP on a consumer domain is still not ours
    ],
)
def test_non_microsoft_providers_are_not_handled_with_a_reason(provider, email):
    decided = decide(row(email=email, provider=provider, authentication_type="password"))
    assert decided.category == NOT_HANDLED_CATEGORY
    assert decided.plugin is None
    assert decided.status is AccountStatus.UNSUPPORTED
    assert repr(provider) in decided.reason


@pytest.mark.parametrize(
    "fields",
    [
        {
            "provider": "exchange",
            "authentication_type": "password",
            "ews_host": "mail.corp.example.org",
        },
        {"provider": "ews", "authentication_type": "password"},
        {"provider": "office365", "authentication_type": "oauth"},
    ],
)
@pytest.mark.parametrize("flag", ["true", "TRUE", "1", "yes"])
def test_service_accounts_are_unsupported(fields, flag):
    account = row(email="svc-scanner@corp.example.org", service_account=flag, **fields)
    assert account.service_account is True
    decided = decide(account)
    assert decided.category == SERVICE_ACCOUNT_CATEGORY
    assert decided.plugin is None
    assert decided.status is AccountStatus.UNSUPPORTED
    assert "service account" in decided.reason


def test_service_account_false_is_classified_normally():
    account = row(
        email="alan@corp.example.org",
        provider="exchange",
        authentication_type="password",
        service_account="false",
    )
    assert_situation(account, ONPREM)


# -- plugins enabled and disabled ------------------------------------------------------------

MICROSOFT_ROWS = [
    row(email="ada@contoso.com", provider="office365", scopes=GRAPH_SCOPES, grant_status="valid"),
    row(email="grace@contoso.com", provider="office365", scopes=EWS_SCOPE),
    row(email="alan@corp.example.org", provider="exchange", authentication_type="password"),
    row(email="edsger@outlook.com", provider="outlook"),
    row(email="juan@live.com.mx", provider="eas"),
]


@pytest.mark.parametrize("account", MICROSOFT_ROWS, ids=lambda a: a.email)
def test_exactly_one_builtin_plugin_claims_each_microsoft_account(account):
    claims = [cls.name for cls in ALL_PLUGINS if cls().claim(account) is not None]
    assert len(claims) == 1, claims


@pytest.mark.parametrize(
    ("enabled", "unclaimed"),
    [
        (
            (MicrosoftGraphPlugin,),
            {"alan@corp.example.org", "edsger@outlook.com", "juan@live.com.mx"},
        ),
        ((EwsPasswordPlugin, MicrosoftPersonalPlugin), {"ada@contoso.com", "grace@contoso.com"}),
        ((), {account.email for account in MICROSOFT_ROWS}),
    ],
)
def test_accounts_of_a_disabled_plugin_become_not_handled(enabled, unclaimed):
    reg = build_registry([], list(enabled))
    for account in MICROSOFT_ROWS:
        decided = classify(account, reg)
        if account.email in unclaimed:
            assert decided.category == NOT_HANDLED_CATEGORY
            assert decided.status is AccountStatus.UNSUPPORTED
            assert decided.plugin is None
            assert account.provider in decided.reason
        else:
            assert decided.plugin in reg.names


def test_enable_list_picks_plugins_out_of_the_installed_ones():
    reg = build_registry(["ews-password"], list(ALL_PLUGINS))
    assert reg.names == ["ews-password"]
    decided = classify(row(email="ada@contoso.com", provider="office365"), reg)
    assert decided.category == NOT_HANDLED_CATEGORY


def test_classification_salt_changes_with_the_enabled_plugins():
    assert classification_salt(registry()) != classification_salt(registry(MicrosoftGraphPlugin))
    # Order of enabling does not matter, only the set.
    assert classification_salt(
        build_registry(["microsoft-graph", "ews-password"], list(ALL_PLUGINS))
    ) == (
        classification_salt(build_registry(["ews-password", "microsoft-graph"], list(ALL_PLUGINS)))
    )


CSV_ROWS = """account_id,email,provider,authentication_type
acc-o365,ada@contoso.com,office365,oauth
acc-onprem,alan@corp.example.org,exchange,password
acc-personal,edsger@outlook.com,outlook,oauth
acc-gmail,someone@gmail.com,gmail,oauth
"""


def test_import_with_a_plugin_disabled_keeps_every_account(make_app, make_runner, tmp_path):
    from portal import migrate

    app = make_app(plugins=[MicrosoftGraphPlugin])
    with app.app_context():
        migrate.upgrade(db.engine)
    source = tmp_path / "accounts.csv"
    source.write_text(CSV_ROWS)
    result = make_runner(app).invoke(args=["accounts", "import", str(source)])
    assert result.exit_code == 0, result.output
    with app.app_context():
        rows = dict(db.session.execute(select(Account.account_id, Account.category)).all())
        plugins = dict(db.session.execute(select(Account.account_id, Account.plugin)).all())
        unsupported = db.session.scalar(
            select(func.count()).where(Account.status == AccountStatus.UNSUPPORTED)
        )
    assert rows == {
        "acc-o365": CONSENT,
        "acc-onprem": NOT_HANDLED_CATEGORY,
        "acc-personal": NOT_HANDLED_CATEGORY,
        "acc-gmail": NOT_HANDLED_CATEGORY,
    }
    assert plugins["acc-o365"] == "microsoft-graph"
    assert unsupported == 3


def test_enabling_a_plugin_later_reclassifies_on_reimport(make_app, make_runner, tmp_path):
    from portal import migrate

    source = tmp_path / "accounts.csv"
    source.write_text(CSV_ROWS)
    graph_only = make_app(plugins=[MicrosoftGraphPlugin])
    with graph_only.app_context():
        migrate.upgrade(db.engine)
    assert make_runner(graph_only).invoke(args=["accounts", "import", str(source)]).exit_code == 0

    everything = make_app(plugins=list(ALL_PLUGINS))
    result = make_runner(everything).invoke(args=["accounts", "import", str(source)])
    assert result.exit_code == 0, result.output
    assert "imported 0, updated 4, unchanged 0, rejected 0" in result.stdout
    with everything.app_context():
        rows = dict(db.session.execute(select(Account.account_id, Account.category)).all())
        statuses = dict(db.session.execute(select(Account.account_id, Account.status)).all())
    assert rows == {
        "acc-o365": CONSENT,
        "acc-onprem": ONPREM,
        "acc-personal": PERSONAL,
        "acc-gmail": NOT_HANDLED_CATEGORY,
    }
    assert statuses["acc-onprem"] == statuses["acc-personal"] == AccountStatus.NEW
