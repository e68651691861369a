"""The plugin registry and the default parts of the plugin contract (portal/plugins.py)."""

from __future__ import annotations

from dataclasses import replace
from importlib.metadata import EntryPoint

import pytest
from reauth_plugins.ews_password import EwsPasswordPlugin
from reauth_plugins.microsoft_graph import MicrosoftGraphPlugin
from reauth_plugins.microsoft_personal import MicrosoftPersonalPlugin

from portal.accounts.rows import parse_row
from portal.plugins import (
    ENTRY_POINT_GROUP,
    PLUGIN_API_VERSION,
    AuthResult,
    Claim,
    Plugin,
    PluginError,
    PluginRegistry,
    Wording,
    api_version_accepted,
    build_registry,
    load_entry_point,
    plugin_registry,
)
from portal.testing.contract import PluginContract, sample_account

BUILTINS = {
    "microsoft-graph": MicrosoftGraphPlugin,
    "ews-password": EwsPasswordPlugin,
    "microsoft-personal": MicrosoftPersonalPlugin,
}


def make_plugin(name: str, priority: int = 100, claims: bool = True, **attributes) -> type[Plugin]:
    def claim(self, account):
        return (
            Claim(category=f"{name}-category", needs_reauth=True, reason=name) if claims else None
        )

    def wording(self, account):
        return Wording(name, name, name, name)

    namespace = {
        "wording": wording,
        "name": name,
        "display_name": name.title(),
        "nylas_provider": "imap",
        "priority": priority,
        "claim": claim,
        **attributes,
    }
    return type(f"Plugin_{name.replace('-', '_')}", (Plugin,), namespace)


ACCOUNT = parse_row(
    {"account_id": "acc-1", "email": "Ada.Lovelace@Contoso.com", "provider": "imap"}
)


# -- registry from explicit classes ---------------------------------------------------------


def test_explicit_classes_are_ordered_by_priority_then_name():
    a, b, c = make_plugin("alpha", 50), make_plugin("beta", 10), make_plugin("gamma", 50)
    registry = build_registry([], [c, a, b])
    assert isinstance(registry, PluginRegistry)
    assert registry.names == ["beta", "alpha", "gamma"]
    assert [type(plugin) for plugin in registry] == [b, a, c]
    assert len(registry) == 3
    assert "alpha" in registry
    assert "delta" not in registry
    assert isinstance(registry.get("alpha"), a)
    assert registry.get(None) is None
    assert registry.get("delta") is None
    assert registry.installed == ["alpha", "beta", "gamma"]


def test_enable_list_picks_but_does_not_reorder():
    a, b, c = make_plugin("alpha", 30), make_plugin("beta", 20), make_plugin("gamma", 10)
    registry = build_registry(["alpha", "gamma"], [a, b, c])
    assert registry.names == ["gamma", "alpha"]  # priority decides, not the list order
    assert registry.installed == ["alpha", "beta", "gamma"]


def test_lowest_priority_number_claims_first():
    first, second = make_plugin("first", 1), make_plugin("second", 2)
    registry = build_registry([], [second, first])
    plugin, claim = registry.first_claim(ACCOUNT)
    assert plugin.name == "first"
    assert claim.category == "first-category"


def test_a_plugin_that_declines_lets_the_next_one_claim():
    declining, claiming = make_plugin("declining", 1, claims=False), make_plugin("claiming", 2)
    plugin, _ = build_registry([], [declining, claiming]).first_claim(ACCOUNT)
    assert plugin.name == "claiming"
    assert build_registry([], [declining]).first_claim(ACCOUNT) is None


def test_unknown_name_in_the_enable_list_is_named():
    with pytest.raises(PluginError) as caught:
        build_registry(["alpha", "nope"], [make_plugin("alpha")])
    assert "nope" in str(caught.value)
    assert "installed: alpha" in str(caught.value)


class NotAPlugin:
    name = "not-a-plugin"
    display_name = "Not a plugin"
    nylas_provider = "imap"


class NoNamePlugin(Plugin):
    display_name = "Nameless"
    nylas_provider = "imap"


class NoProviderPlugin(Plugin):
    name = "no-provider"
    display_name = "No provider"

    def claim(self, account):
        return None

    def wording(self, account):
        return Wording("h", "e", "n", "s")


@pytest.mark.parametrize(
    ("candidate", "expected"),
    [
        (NotAPlugin, "is not a subclass of portal.plugins.Plugin"),
        (NoNamePlugin, "'name' is empty"),
        (NoProviderPlugin, "'nylas_provider' is empty"),
    ],
)
def test_invalid_plugin_classes_are_refused_by_name(candidate, expected):
    with pytest.raises(PluginError) as caught:
        build_registry([], [make_plugin("fine"), candidate])
    message = str(caught.value)
    assert expected in message
    assert candidate.__name__ in message


def test_something_that_is_not_a_class_is_refused():
    with pytest.raises(PluginError, match="not a subclass"):
        build_registry([], [MicrosoftGraphPlugin(), make_plugin("fine")])


def test_two_classes_with_one_name_are_refused():
    with pytest.raises(PluginError) as caught:
        build_registry([], [make_plugin("twin"), make_plugin("twin", 5)])
    assert "'twin'" in str(caught.value)


def test_create_app_uses_the_given_classes(make_app):
    app = make_app(plugins=[make_plugin("only-one")])
    assert plugin_registry(app).names == ["only-one"]
    with app.app_context():
        assert plugin_registry().names == ["only-one"]


# -- entry points ---------------------------------------------------------------------------


def test_builtins_load_from_the_installed_entry_points():
    """The one test that reads real entry points: it tests the loader itself."""
    registry = build_registry([], None)
    for name, cls in BUILTINS.items():
        assert name in registry.installed
        assert type(registry.get(name)) is cls
    assert registry.names == sorted(registry.names, key=lambda n: (registry.get(n).priority, n))
    only = build_registry(["ews-password"], None)
    assert only.names == ["ews-password"]
    assert set(BUILTINS) <= set(only.installed)


def entry_point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_entry_point_that_fails_to_import_is_named():
    with pytest.raises(PluginError) as caught:
        load_entry_point(entry_point("broken", "reauth_plugins.does_not_exist:Plugin"))
    assert "plugin 'broken' failed to load" in str(caught.value)


def test_entry_point_to_a_non_plugin_is_named():
    with pytest.raises(PluginError) as caught:
        load_entry_point(entry_point("odd", "portal.config:ConfigError"))
    assert "plugin 'odd'" in str(caught.value)
    assert "not a subclass" in str(caught.value)


def test_entry_point_name_must_match_the_class_name():
    with pytest.raises(PluginError) as caught:
        load_entry_point(entry_point("exchange", "reauth_plugins.ews_password:EwsPasswordPlugin"))
    assert "'exchange'" in str(caught.value)
    assert "'ews-password'" in str(caught.value)


def test_entry_point_of_a_builtin_loads():
    loaded = load_entry_point(
        entry_point("ews-password", "reauth_plugins.ews_password:EwsPasswordPlugin")
    )
    assert loaded is EwsPasswordPlugin


# -- default contract -----------------------------------------------------------------------


class ScopedPlugin(Plugin):
    name = "scoped"
    display_name = "Scoped"
    nylas_provider = "microsoft"

    def required_scopes(self, account):
        return ("Mail.ReadWrite", "offline_access")

    def claim(self, account):
        return None

    def wording(self, account):
        return Wording("h", "e", "n", "s")


def result(email: str, scopes=("Mail.ReadWrite", "offline_access")) -> AuthResult:
    return AuthResult(grant_id="g-1", email=email, provider="microsoft", scopes=scopes)


@pytest.mark.parametrize(
    "email", ["ada.lovelace@contoso.com", "ADA.LOVELACE@CONTOSO.COM", " Ada.Lovelace@Contoso.com "]
)
def test_verify_accepts_the_same_mailbox_in_any_case(email):
    verdict = ScopedPlugin().verify(ACCOUNT, result(email))
    assert verdict.accepted
    assert verdict.reason == ""


@pytest.mark.parametrize(
    "email",
    ["grace@contoso.com", "ada.lovelace@contoso.co", "ada.lovelace@contoso.com.evil.example"],
)
def test_verify_refuses_another_mailbox(email):
    verdict = ScopedPlugin().verify(ACCOUNT, result(email))
    assert not verdict.accepted
    assert verdict.reason == "mailbox_mismatch"


def test_verify_accepts_a_grant_whose_aliases_include_the_invited_address():
    upn = AuthResult("g-1", "alovelace@contoso.onmicrosoft.com", "microsoft", ("Mail.ReadWrite",))
    aliased = replace(upn, aliases=("lovelace@contoso.com", "Ada.Lovelace@contoso.com"))
    assert not ScopedPlugin().verify(ACCOUNT, upn).accepted
    assert ScopedPlugin().verify(ACCOUNT, aliased).accepted
    assert aliased.address_matching(" ADA.LOVELACE@contoso.com") == "ada.lovelace@contoso.com"
    stranger = replace(upn, aliases=("ada.lovelace@contoso.co", "grace@contoso.com"))
    assert ScopedPlugin().verify(ACCOUNT, stranger).reason == "mailbox_mismatch"


def test_verify_refuses_missing_scopes_and_names_them():
    verdict = ScopedPlugin().verify(
        ACCOUNT, result("ada.lovelace@contoso.com", scopes=("User.Read",))
    )
    assert not verdict.accepted
    assert verdict.reason == "missing_scopes:mail.readwrite"


def test_verify_accepts_nylas_truncated_answer_without_offline_access():
    # Nylas reports Microsoft scopes in short form and never lists offline_access as granted.
    scopes = ("Mail.ReadWrite", "https://graph.microsoft.com/Calendars.Read")
    assert ScopedPlugin().verify(ACCOUNT, result("ada.lovelace@contoso.com", scopes)).accepted


def test_verify_compares_scopes_without_case_and_allows_extras():
    scopes = ("mail.readwrite", "OFFLINE_ACCESS", "Calendars.Read")
    assert ScopedPlugin().verify(ACCOUNT, result("ada.lovelace@contoso.com", scopes)).accepted


def test_verify_without_required_scopes_only_checks_the_mailbox():
    plugin = make_plugin("plain")()
    assert plugin.verify(ACCOUNT, result("ada.lovelace@contoso.com", scopes=())).accepted
    assert not plugin.verify(ACCOUNT, result("someone@contoso.com", scopes=())).accepted


def test_default_hosted_auth_request():
    request = ScopedPlugin().hosted_auth_request(ACCOUNT)
    assert request.provider == "microsoft"
    assert tuple(request.scopes) == ("Mail.ReadWrite", "offline_access")
    assert request.login_hint == "ada.lovelace@contoso.com"
    assert request.credential_id is None
    assert request.extra_params == {}


def test_claim_and_wording_are_abstract():
    assert Plugin.__abstractmethods__ == frozenset({"claim", "wording"})
    with pytest.raises(TypeError):
        Plugin()  # type: ignore[abstract]


@pytest.mark.parametrize("cls", list(BUILTINS.values()))
def test_builtins_have_wording_and_a_display_name(cls):
    plugin = cls()
    account = parse_row({"account_id": "a", "email": "ada@contoso.com", "provider": "office365"})
    wording = plugin.wording(account)
    assert wording.headline and wording.explanation and wording.next_step and wording.email_subject
    assert plugin.display_name


# -- start-up checks of the class (docs/plugins.md, "What start-up checks") ----------------


class ImapAndYahooPlugin(Plugin):
    """One class, two Nylas providers: Yahoo addresses go to Nylas' yahoo connector."""

    name = "imap-and-yahoo"
    display_name = "IMAP and Yahoo"
    nylas_provider = "imap"
    nylas_providers = ("imap", "yahoo")

    def claim(self, account):
        return Claim("password", needs_reauth=True, reason="password mailbox")

    def hosted_auth_request(self, account):
        request = super().hosted_auth_request(account)
        if account.email.lower().endswith("@yahoo.com"):
            return replace(request, provider="yahoo")
        return request

    def wording(self, account):
        return Wording("Reconnect", "We moved.", "Sign in.", "Reconnect your mailbox")


class NoClaimPlugin(Plugin):
    name = "no-claim"
    display_name = "No claim"
    nylas_provider = "imap"

    def wording(self, account):
        return Wording("h", "e", "n", "s")


class MisspeltProviderPlugin(NoClaimPlugin):
    name = "misspelt"
    nylas_provider = "microsft"

    def claim(self, account):
        return None


def test_a_plugin_may_serve_two_providers(make_app):
    app = make_app(plugins=[ImapAndYahooPlugin])
    plugin = plugin_registry(app).get("imap-and-yahoo")
    assert plugin is not None and plugin.providers() == ("imap", "yahoo")
    yahoo = replace(ACCOUNT, email="ada@yahoo.com")
    assert plugin.hosted_auth_request(yahoo).provider == "yahoo"
    assert plugin.hosted_auth_request(ACCOUNT).provider == "imap"


def test_a_plugin_without_claim_stops_start_up_with_one_line(make_app):
    with pytest.raises(PluginError) as caught:
        make_app(plugins=[NoClaimPlugin])
    assert (
        str(caught.value)
        == "plugin 'NoClaimPlugin': class NoClaimPlugin does not implement claim()"
    )


def test_a_misspelt_provider_stops_start_up_with_one_line(make_app):
    with pytest.raises(PluginError) as caught:
        make_app(plugins=[MisspeltProviderPlugin])
    message = str(caught.value)
    assert "\n" not in message
    assert "Nylas provider 'microsft' is not one Nylas supports" in message
    assert "microsoft" in message


def test_an_unknown_second_provider_is_refused():
    odd = type("OddSecond", (ImapAndYahooPlugin,), {"name": "odd", "nylas_providers": ("gmail",)})
    with pytest.raises(PluginError, match="'gmail' is not one Nylas supports"):
        build_registry([], [odd])


@pytest.mark.parametrize("name", ["Upper", "under_score", "dot.ted", "-lead", "trail-", "a--b", ""])
def test_names_outside_the_rule_are_refused(name):
    odd = type("OddName", (ImapAndYahooPlugin,), {"name": name})
    with pytest.raises(PluginError):
        build_registry([], [odd])


@pytest.mark.parametrize("name", ["imap", "acme-imap", "m365-2"])
def test_names_inside_the_rule_load(name):
    fine = type("FineName", (ImapAndYahooPlugin,), {"name": name})
    assert build_registry([], [fine]).names == [name]


@pytest.mark.parametrize(
    ("requirement", "accepted"),
    [
        ("", True),
        (">=1.0,<2", True),
        (">=1.1", True),
        (">=1.2", False),
        ("<1", False),
        ("==1.1", True),
        ("junk", False),
        (">=2.0", False),
    ],
)
def test_requires_api_is_checked_against_plugin_api_version(requirement, accepted):
    assert PLUGIN_API_VERSION == "1.1.0"
    cls = type("Ranged", (ImapAndYahooPlugin,), {"name": "ranged", "requires_api": requirement})
    if accepted:
        assert build_registry([], [cls]).names == ["ranged"]
    else:
        with pytest.raises(PluginError, match="requires plugin API"):
            build_registry([], [cls])


def test_api_version_ranges():
    assert api_version_accepted(">=1.0, <2", "1.9.3")
    assert not api_version_accepted(">=1.0,<2", "2.0.0")
    assert api_version_accepted("!=1.1.0", "1.1.1")


class TestTwoProviderPluginPassesTheContract(PluginContract):
    """The kit accepts a HostedAuthRequest.provider that is any of the plugin's providers and
    walks each account on its provider's emulator form (IMAP form, Yahoo's OAuth page)."""

    plugin_class = ImapAndYahooPlugin
    claimed_accounts = [
        sample_account("ada@mail.example", "imap", grant_id="g-ada"),
        sample_account("bob@yahoo.com", "imap"),
    ]
