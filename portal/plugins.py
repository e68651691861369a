"""The plugin contract (a small base class) and the registry that loads enabled plugins.

A plugin says only what differs per provider: which accounts it claims and whether they need
re-authentication, the hosted-auth parameters, how a result is verified, and its wording.
The core owns routes, tokens, state/PKCE, the database, mail and every call to Nylas.
docs/plugins.md is the author's guide; every public member below is documented there.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import ClassVar, Protocol

from flask import Flask, current_app

# The scope vocabulary is part of the plugin API: a plugin reads an account's v2 scopes with it.
from portal.scopes import GRAPH_BASELINE as GRAPH_BASELINE
from portal.scopes import UnknownScopeError as UnknownScopeError
from portal.scopes import is_on_graph as is_on_graph
from portal.scopes import missing_scopes as missing_scopes
from portal.scopes import split_scopes as split_scopes
from portal.scopes import translate as translate

ENTRY_POINT_GROUP = "reauth_portal.plugins"
EXTENSION_KEY = "reauth_plugins"

#: The version of this contract (semantic versioning, docs/plugins.md "Compatibility"): a
#: minor bump adds, a major bump removes or changes. Plugins state the range they accept in
#: `Plugin.requires_api`.
PLUGIN_API_VERSION = "1.1.0"

#: The one name rule, shared by the registry, the contract kit and docs/plugins.md.
PLUGIN_NAME_RULE = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

#: The providers Nylas v3 hosted authentication and grants know (the `provider` enum of the
#: v3 API reference, /v3/connect/auth and the Grant object). A name outside it is a typo.
NYLAS_PROVIDERS = frozenset(
    {"google", "microsoft", "imap", "icloud", "yahoo", "ews", "virtual-calendar", "zoom", "nylas"}
)


class AccountView(Protocol):
    """What a plugin may read of an account (an imported row or a stored account).

    Read-only on purpose: a plugin decides, the core writes. Any object with these attributes
    fits, a frozen dataclass included.
    """

    @property
    def account_id(self) -> str: ...
    @property
    def email(self) -> str: ...
    @property
    def provider(self) -> str: ...
    @property
    def authentication_type(self) -> str | None: ...
    @property
    def scopes(self) -> str | None: ...
    @property
    def ews_host(self) -> str | None: ...
    @property
    def tenant(self) -> str | None: ...
    @property
    def service_account(self) -> bool: ...
    @property
    def grant_id(self) -> str | None: ...
    @property
    def grant_status(self) -> str | None: ...


@dataclass(frozen=True)
class Claim:
    """A plugin's answer for an account it handles.

    `category` names the situation of the move (for stats), `needs_reauth` False means the
    account needs nothing (it is recorded as not required) and `reason` says why, in one line.
    """

    category: str
    needs_reauth: bool
    reason: str


@dataclass(frozen=True)
class HostedAuthRequest:
    """What the core sends to Nylas hosted authentication for one attempt."""

    provider: str
    scopes: Sequence[str] = ()
    login_hint: str | None = None
    credential_id: str | None = None
    extra_params: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AuthResult:
    """What came back from the code exchange.

    `aliases` are the other addresses of the signed-in mailbox as Nylas lists them (Microsoft
    365 and Google only; empty when Nylas gives none or was not asked): a Microsoft grant's
    `email` may be the user principal name rather than the address v2 recorded.
    """

    grant_id: str
    email: str
    provider: str | None
    scopes: Sequence[str]
    aliases: Sequence[str] = ()

    def address_matching(self, invited: str) -> str | None:
        """The mailbox address equal to `invited` (case-insensitive): the grant's email
        first, then its aliases; None when the invited address is not this mailbox's."""
        wanted = invited.strip().lower()
        for address in (self.email, *self.aliases):
            if address.strip().lower() == wanted:
                return address.strip().lower()
        return None


@dataclass(frozen=True)
class Verdict:
    """A plugin's judgement of an auth result: accepted, or refused with a reason code."""

    accepted: bool
    reason: str = ""

    @classmethod
    def accept(cls) -> Verdict:
        return cls(True)

    @classmethod
    def refuse(cls, reason: str) -> Verdict:
        return cls(False, reason)


@dataclass(frozen=True)
class Wording:
    """The words a plugin shows on the landing page and in its emails."""

    headline: str
    explanation: str
    next_step: str
    email_subject: str
    #: Extra advice on the "you signed in with a different mailbox" page, after the neutral
    #: "sign in as <address>" line; empty shows only that line. Plain text, one paragraph.
    mismatch_advice: str = ""
    #: Extra help under "Stuck on the sign-in page?" on the landing page, for provider pages
    #: that do not send the person back; empty shows only the neutral line.
    stuck_help: str = ""


class Plugin(ABC):
    """Base class of every provider plugin. Subclass it, set the class attributes, and
    implement the abstract methods `claim()` and `wording()`."""

    #: Stable identifier, the entry-point name, used in REAUTH_PLUGINS and the ledger.
    name: ClassVar[str] = ""
    #: Human name shown to admins and users.
    display_name: ClassVar[str] = ""
    #: The Nylas provider for hosted auth (`microsoft`, `ews`, `google`, ...).
    nylas_provider: ClassVar[str] = ""
    #: True when a completed sign-in creates a new grant rather than re-authenticating one.
    creates_new_grant: ClassVar[bool] = False
    #: Lower numbers are asked first when two plugins could claim the same account.
    priority: ClassVar[int] = 100
    #: Every Nylas provider `hosted_auth_request()` may name; empty means (nylas_provider,).
    nylas_providers: ClassVar[tuple[str, ...]] = ()
    #: The version of this plugin's claim() rules; bump it when claim() answers differently,
    #: and the next import of the same file re-classifies the rows.
    rules_version: ClassVar[str] = "1"
    #: The PLUGIN_API_VERSION range this plugin works with, e.g. ">=1.1,<2"; empty accepts any.
    requires_api: ClassVar[str] = ""

    @classmethod
    def providers(cls) -> tuple[str, ...]:
        """The Nylas providers this plugin uses: `nylas_provider` first, then the others."""
        others = tuple(p for p in cls.nylas_providers if p != cls.nylas_provider)
        return (cls.nylas_provider, *others)

    def preflight_checks(self) -> Sequence[PreflightCheck]:
        """Extra start-of-campaign checks of this plugin (run by `reauth nylas preflight`)."""
        return ()

    @abstractmethod
    def claim(self, account: AccountView) -> Claim | None:
        """Return a Claim when this plugin handles the account, else None."""

    def required_scopes(self, account: AccountView) -> Sequence[str]:
        """Scopes the finished grant must hold; empty means the connector's defaults."""
        return ()

    def hosted_auth_request(self, account: AccountView) -> HostedAuthRequest:
        """Build the hosted-auth parameters for this account."""
        return HostedAuthRequest(
            provider=self.nylas_provider,
            scopes=tuple(self.required_scopes(account)),
            login_hint=account.email,
        )

    def verify(self, account: AccountView, result: AuthResult) -> Verdict:
        """Judge the result; by default the same mailbox must come back with the scopes.

        The same mailbox means the invited address is the grant's email or one of its aliases.
        """
        if result.address_matching(account.email) is None:
            return Verdict.refuse("mailbox_mismatch")
        missing = missing_scopes(self.required_scopes(account), result.scopes)
        if missing:
            return Verdict.refuse("missing_scopes:" + " ".join(sorted(missing)))
        return Verdict.accept()

    @abstractmethod
    def wording(self, account: AccountView) -> Wording:
        """Return the landing-page and email copy for this account."""


@dataclass(frozen=True)
class PreflightCheck:
    """One extra check a plugin contributes to preflight: a label and a function that returns
    None when all is well, else one line saying what is wrong. No network calls: the check
    sees only the plugin's own configuration (the core checks the Nylas connectors)."""

    label: str
    run: Callable[[], str | None]


class PluginError(Exception):
    """A plugin that cannot be loaded or is not a valid plugin; the message names it."""


class PluginRegistry:
    """The enabled plugins of one app, in the order they are asked to claim accounts."""

    def __init__(self, plugins: Iterable[Plugin], installed: Iterable[str] = ()) -> None:
        self._plugins = {plugin.name: plugin for plugin in plugins}
        self.installed = sorted(set(installed) | set(self._plugins))

    def __iter__(self) -> Iterator[Plugin]:
        return iter(self._plugins.values())

    def __len__(self) -> int:
        return len(self._plugins)

    def __contains__(self, name: object) -> bool:
        return name in self._plugins

    def get(self, name: str | None) -> Plugin | None:
        return self._plugins.get(name) if name else None

    @property
    def names(self) -> list[str]:
        return list(self._plugins)

    def first_claim(self, account: AccountView) -> tuple[Plugin, Claim] | None:
        """Ask each plugin in turn; the first claim wins."""
        for plugin in self._plugins.values():
            claim = plugin.claim(account)
            if claim is not None:
                return plugin, claim
        return None


def check_plugin_class(candidate: object, label: str) -> type[Plugin]:
    """The class, when it is a complete plugin; else PluginError with one line saying why."""
    if not isinstance(candidate, type) or not issubclass(candidate, Plugin):
        raise PluginError(
            f"plugin {label!r}: {candidate!r} is not a subclass of portal.plugins.Plugin"
        )
    for attribute in ("name", "display_name", "nylas_provider"):
        if not getattr(candidate, attribute):
            raise PluginError(f"plugin {label!r}: class attribute {attribute!r} is empty")
    missing = sorted(getattr(candidate, "__abstractmethods__", ()))
    if missing:
        methods = ", ".join(f"{name}()" for name in missing)
        raise PluginError(
            f"plugin {label!r}: class {candidate.__name__} does not implement {methods}"
        )
    if not PLUGIN_NAME_RULE.fullmatch(candidate.name):
        raise PluginError(
            f"plugin {label!r}: name {candidate.name!r} is not lowercase letters, digits and '-'"
        )
    unknown = [p for p in candidate.providers() if p not in NYLAS_PROVIDERS]
    if unknown:
        raise PluginError(
            f"plugin {label!r}: Nylas provider {', '.join(map(repr, unknown))} is not one Nylas "
            f"supports ({', '.join(sorted(NYLAS_PROVIDERS))})"
        )
    if not api_version_accepted(candidate.requires_api, PLUGIN_API_VERSION):
        raise PluginError(
            f"plugin {label!r}: requires plugin API {candidate.requires_api!r}, "
            f"this portal has {PLUGIN_API_VERSION}"
        )
    return candidate


VERSION_CLAUSE = re.compile(r"\s*(>=|<=|==|!=|>|<)\s*(\d+(?:\.\d+){0,2})\s*")


def version_tuple(text: str) -> tuple[int, int, int]:
    parts = [int(part) for part in text.split(".")]
    major, minor, patch = (*parts, 0, 0, 0)[:3]
    return major, minor, patch


def api_version_accepted(requirement: str, version: str) -> bool:
    """True when `version` is inside `requirement`, comma-separated clauses such as
    ">=1.1,<2" (missing parts count as 0). An unreadable requirement accepts nothing."""
    if not requirement.strip():
        return True
    have = version_tuple(version)
    for clause in requirement.split(","):
        match = VERSION_CLAUSE.fullmatch(clause)
        if match is None:
            return False
        operator, wanted = match.group(1), version_tuple(match.group(2))
        accepted = {
            ">=": have >= wanted,
            "<=": have <= wanted,
            ">": have > wanted,
            "<": have < wanted,
            "==": have == wanted,
            "!=": have != wanted,
        }[operator]
        if not accepted:
            return False
    return True


def load_entry_point(entry_point: EntryPoint) -> type[Plugin]:
    try:
        loaded = entry_point.load()
    except Exception as exc:  # any import-time failure of third-party code
        raise PluginError(f"plugin {entry_point.name!r} failed to load: {exc}") from exc
    plugin_class = check_plugin_class(loaded, entry_point.name)
    if plugin_class.name != entry_point.name:
        raise PluginError(
            f"plugin {entry_point.name!r}: class {plugin_class.__name__} declares name "
            f"{plugin_class.name!r}; the entry-point name and the class name must agree"
        )
    return plugin_class


def installed_entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def build_registry(
    enabled: Sequence[str], plugin_classes: Sequence[type[Plugin]] | None = None
) -> PluginRegistry:
    """Load plugins: the explicit classes (tests) or the installed entry points, then filter.

    `enabled` empty means every plugin available; a name that is not available is an error.
    """
    available: dict[str, type[Plugin]]
    if plugin_classes is not None:
        available = {}
        for candidate in plugin_classes:
            label = getattr(candidate, "__qualname__", None) or repr(candidate)
            cls = check_plugin_class(candidate, label)
            if cls.name in available:
                raise PluginError(
                    f"plugin {cls.name!r}: declared by both {available[cls.name].__qualname__} "
                    f"and {cls.__qualname__}"
                )
            available[cls.name] = cls
        installed = list(available)
    else:
        entries = installed_entry_points()
        installed = sorted(entries)
        wanted = enabled or installed
        unknown = [name for name in wanted if name not in entries]
        if unknown:
            raise PluginError(unknown_plugins_message(unknown, installed))
        available = {name: load_entry_point(entries[name]) for name in wanted}
    names = list(enabled) or list(available)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise PluginError(unknown_plugins_message(unknown, list(available)))
    ordered = sorted(names, key=lambda n: (available[n].priority, n))
    return PluginRegistry((available[name]() for name in ordered), installed)


def unknown_plugins_message(unknown: Sequence[str], installed: Sequence[str]) -> str:
    return (
        f"REAUTH_PLUGINS names plugins that are not installed: {', '.join(unknown)} "
        f"(installed: {', '.join(installed) or 'none'})"
    )


def install_registry(app: Flask, registry: PluginRegistry) -> None:
    """Keep the app's enabled plugins where plugin_registry finds them."""
    app.extensions[EXTENSION_KEY] = registry


def plugin_registry(app: Flask | None = None) -> PluginRegistry:
    """The enabled plugins of the given app, or of the current one."""
    registry = (app or current_app).extensions[EXTENSION_KEY]
    assert isinstance(registry, PluginRegistry)
    return registry
