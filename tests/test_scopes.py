"""v2 -> Graph scope translation: the function and `reauth scopes translate`."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from portal.cli.scopes import scopes_group
from portal.scopes import (
    V2_TO_GRAPH,
    UnknownScopeError,
    is_graph_scope,
    is_on_graph,
    missing_scopes,
    split_scopes,
    translate,
)


@pytest.mark.parametrize(
    ("v2", "graph"),
    [
        (["email.read_only"], ["Mail.Read"]),
        (["email"], ["Mail.ReadWrite", "Mail.Send"]),
        (["email.send"], ["Mail.ReadWrite", "Mail.Send"]),
        (["calendar"], ["Calendars.ReadWrite"]),
        (["contacts.read_only"], ["Contacts.Read", "People.Read"]),
        (["room_resources.read_only"], ["Place.Read.All"]),
    ],
)
def test_each_v2_scope_maps_to_its_graph_scopes(v2: list[str], graph: list[str]) -> None:
    assert translate(v2, with_baseline=False) == graph


def test_every_table_row_translates() -> None:
    for v2, graph in V2_TO_GRAPH.items():
        assert translate([v2], with_baseline=False) == list(graph)


def test_baseline_is_added_once_and_repeats_collapse() -> None:
    result = translate(["email.read_only", "email.metadata", "offline_access"])
    assert result == ["Mail.Read", "offline_access", "User.Read"]


def test_graph_scopes_pass_through_in_short_form() -> None:
    result = translate(
        ["https://graph.microsoft.com/Mail.Read", "Calendars.Read"], with_baseline=False
    )
    assert result == ["Mail.Read", "Calendars.Read"]


def test_ews_scopes_are_dropped() -> None:
    assert translate(["https://outlook.office365.com/EWS.AccessAsUser.All"]) == [
        "offline_access",
        "User.Read",
    ]


@pytest.mark.parametrize(
    "legacy",
    [
        "EWS.AccessAsUser.All",
        "EAS.AccessAsUser.All",
        "https://graph.microsoft.com/EWS.AccessAsUser.All",
        "https://outlook.office365.com/EAS.AccessAsUser.All",
    ],
)
def test_every_form_of_an_exchange_scope_is_dropped(legacy: str) -> None:
    # These look like Graph permission names; the legacy check must run first.
    assert translate([legacy, "email.read_only"]) == ["Mail.Read", "offline_access", "User.Read"]
    assert not is_graph_scope(legacy)


def test_an_account_holding_only_an_exchange_scope_is_not_on_graph() -> None:
    assert not is_on_graph(["EWS.AccessAsUser.All", "offline_access"])
    assert is_on_graph(["Mail.Read", "offline_access"])


@pytest.mark.parametrize(
    ("v2", "needs"),
    [
        ("contacts.read_only", {"Contacts.Read", "People.Read"}),
        ("email.send", {"Mail.ReadWrite", "Mail.Send"}),
        ("email.modify", {"Mail.ReadWrite"}),  # RSVP answers need Mail.ReadWrite
        ("room_resources.read_only", {"Place.Read.All"}),
    ],
)
def test_nylas_scope_tables(v2: str, needs: set[str]) -> None:
    assert needs <= set(translate([v2], with_baseline=False))


def test_missing_scopes_compares_short_names_and_skips_reserved_ones() -> None:
    required = ["Mail.ReadWrite", "Calendars.Read", "offline_access", "openid", "User.Read"]
    nylas_answer = ["https://graph.microsoft.com/mail.readwrite", "Calendars.Read"]
    assert missing_scopes(required, nylas_answer) == []
    assert missing_scopes(required, ["Calendars.Read"]) == ["mail.readwrite"]


def test_unknown_scope_is_an_error() -> None:
    with pytest.raises(UnknownScopeError, match=r"'mail\.everything'"):
        translate(["mail.everything"])


def test_split_accepts_spaces_commas_and_both() -> None:
    assert split_scopes("email.read_only, calendar  contacts,email.read_only") == [
        "email.read_only",
        "calendar",
        "contacts",
    ]


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(scopes_group, ["translate", *args])
    return result.exit_code, result.stdout, result.stderr


def test_cli_prints_one_graph_scope_per_line() -> None:
    code, out, _ = invoke("email.read_only,calendar", "contacts")
    assert code == 0
    assert out.splitlines() == [
        "Mail.Read",
        "Calendars.ReadWrite",
        "Contacts.ReadWrite",
        "offline_access",
        "User.Read",
    ]


def test_cli_without_baseline() -> None:
    code, out, _ = invoke("--no-baseline", "email.send")
    assert (code, out.splitlines()) == (0, ["Mail.ReadWrite", "Mail.Send"])


def test_cli_unknown_scope_exits_2_with_a_clear_message() -> None:
    code, out, err = invoke("email", "bogus.scope")
    assert code == 2
    assert out == ""
    assert "unknown scope 'bogus.scope'" in err


def test_cli_drops_exchange_scopes_and_says_so() -> None:
    code, out, err = invoke("--no-baseline", "EWS.AccessAsUser.All", "calendar")
    assert (code, out.splitlines()) == (0, ["Calendars.ReadWrite"])
    assert "dropped EWS.AccessAsUser.All" in err


def test_cli_says_which_scopes_need_admin_consent() -> None:
    code, out, err = invoke("room_resources.read_only", "email.read_only")
    assert code == 0
    assert "Place.Read.All" in out.splitlines()
    assert "Place.Read.All needs admin consent" in err
    assert "Mail.Read needs admin consent" not in err


def test_cli_needs_at_least_one_scope() -> None:
    code, _, err = invoke()
    assert code == 2
    assert "Missing argument" in err


def test_cli_is_registered_on_reauth() -> None:
    from portal.cli import cli

    assert "translate" in cli.commands["scopes"].commands  # type: ignore[attr-defined]
