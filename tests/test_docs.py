"""docs/plugins.md keeps up with the plugin API: every public member, the entry-point group."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from portal import plugins
from portal.plugins import (
    ENTRY_POINT_GROUP,
    AccountView,
    AuthResult,
    Claim,
    HostedAuthRequest,
    Plugin,
    Verdict,
    Wording,
)
from portal.testing.contract import contract_checks

ROOT = Path(__file__).parent.parent
GUIDE = ROOT / "docs" / "plugins.md"
# Where the guide names an entry-point group: a TOML table header, or "group `...`" in prose.
GROUP_MENTIONS = (re.compile(r'entry-points\."([^"]+)"'), re.compile(r"group `([^`]+)`"))


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text(encoding="utf-8")


def public_members() -> list[str]:
    """`Class.member` for every public part of the contract."""
    members = [f"Plugin.{name}" for name in vars(Plugin) if not name.startswith("_")]
    for cls in (Claim, HostedAuthRequest, AuthResult, Verdict, Wording):
        members += [f"{cls.__name__}.{field.name}" for field in dataclasses.fields(cls)]
    members += [
        f"Verdict.{name}" for name, value in vars(Verdict).items() if isinstance(value, classmethod)
    ]
    members += [
        f"AccountView.{name}"
        for name, value in vars(AccountView).items()
        if isinstance(value, property)
    ]
    return members


def documented(guide: str, member: str) -> bool:
    """Mentioned in a code span as `Class.member`, `Class.member()` or `Class.member(args)`."""
    return re.search(r"`" + re.escape(member) + r"[`(]", guide) is not None


@pytest.mark.parametrize("member", public_members())
def test_plugin_api_member_is_documented(guide: str, member: str) -> None:
    assert documented(guide, member), f"{member} is not documented in docs/plugins.md"


def test_the_member_list_sees_the_whole_contract() -> None:
    members = public_members()
    for expected in ("Plugin.claim", "Plugin.priority", "Claim.needs_reauth", "Verdict.refuse"):
        assert expected in members
    assert "Plugin.verify" in members and "AccountView.grant_status" in members


def test_documented_detects_a_missing_member() -> None:
    assert documented("call `Plugin.claim(account)` here", "Plugin.claim")
    assert documented("| `Wording.headline` |", "Wording.headline")
    assert not documented("the plugin's name", "Plugin.name")
    assert not documented("`Plugin.names`", "Plugin.name")


@pytest.mark.parametrize(
    "name", ["Plugin", "AccountView", "Claim", "HostedAuthRequest", "AuthResult", "Verdict"]
)
def test_contract_classes_are_named(guide: str, name: str) -> None:
    assert f"`{name}`" in guide
    assert hasattr(plugins, name)


def test_docs_name_the_entry_point_group_the_code_loads(guide: str) -> None:
    assert ENTRY_POINT_GROUP == "reauth_portal.plugins"
    assert f'[project.entry-points."{ENTRY_POINT_GROUP}"]' in guide
    named = {group for pattern in GROUP_MENTIONS for group in pattern.findall(guide)}
    assert named == {ENTRY_POINT_GROUP}


@pytest.mark.parametrize(
    "pyproject", [ROOT / "pyproject.toml", ROOT / "tests" / "example_plugin" / "pyproject.toml"]
)
def test_distributions_declare_plugins_in_that_group(pyproject: Path) -> None:
    entry_points = tomllib.loads(pyproject.read_text())["project"]["entry-points"]
    declared = entry_points[ENTRY_POINT_GROUP]
    assert declared
    assert [group for group in entry_points if group.endswith(".plugins")] == [ENTRY_POINT_GROUP]


def test_docs_name_the_enable_list_and_every_contract_check(guide: str) -> None:
    assert "REAUTH_PLUGINS" in guide
    for check in contract_checks():
        assert f"`{check}`" in guide, f"contract check {check} is not listed in docs/plugins.md"


# -- the contract kit (portal.testing.contract) and its fixtures ---------------------------


def kit_members() -> list[str]:
    """Every public name of the kit, every attribute and method of PluginContract, every field
    of FlowReport, and every fixture the pytest plugin ships."""
    from portal.testing import contract, pytest_plugin

    members = list(contract.__all__)
    members += [name for name in vars(contract.PluginContract) if not name.startswith("_")]
    members += list(contract.PluginContract.__annotations__)
    members += [f.name for f in dataclasses.fields(contract.FlowReport)]
    members += [
        name
        for name, value in vars(pytest_plugin).items()
        if hasattr(value, "_fixture_function_marker")
        or type(value).__name__ == "FixtureFunctionDefinition"
    ]
    return sorted(set(members))


def kit_documented(guide: str, member: str) -> bool:
    """In a code span of its own: `member`, `member(...)` or `PluginContract.member`."""
    pattern = r"`(?:PluginContract\.)?" + re.escape(member) + r"[`(]"
    return re.search(pattern, guide) is not None


@pytest.mark.parametrize("member", kit_members())
def test_contract_kit_member_is_documented(guide: str, member: str) -> None:
    assert kit_documented(guide, member), f"portal.testing.contract: {member} is not documented"


def test_the_kit_member_list_sees_the_fixtures_and_the_kit() -> None:
    members = kit_members()
    for expected in ("nylas_emulator", "plugin_flow", "run_flow", "claimed_accounts", "walk"):
        assert expected in members
