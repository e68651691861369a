"""The emulator's in-memory world: one Nylas application, its grants, connectors and webhooks.

Everything lives in one `EmulatorState` guarded by a lock, so tests can seed and inspect it while
the threaded server answers requests.
"""

from __future__ import annotations

import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from portal.testing.emulator.delivery import WebhookDispatcher
from portal.testing.emulator.throttle import TokenBucket

FAULT_KINDS = ("rate_limit", "server_error", "latency")
ERROR_REDIRECTS = ("full", "error_only")
REAUTH_NOTIFICATIONS = ("grant.updated", "grant.created")
RESETTABLE_SWITCHES = (
    "exchange_refusal_form",
    "error_redirects",
    "reauth_notification",
    "custom_auth_rate",
)
# The providers whose grants Nylas lists `email_aliases` for (GET /v3/grants/{id}?expose_aliases).
ALIAS_PROVIDERS = frozenset({"microsoft", "google"})
DEFAULT_SCOPES = {
    "microsoft": ["Mail.ReadWrite", "Mail.Send", "User.Read", "offline_access"],
    "ews": ["ews.messages", "ews.calendars", "ews.contacts"],
    "google": ["https://www.googleapis.com/auth/gmail.modify"],
}


def now() -> int:
    """Return the current Unix time in seconds, the unit of every Nylas timestamp."""
    return int(time.time())


@dataclass
class Fault:
    """One injected failure: the next `remaining` matching requests get it."""

    kind: str
    remaining: int = 1
    path_prefix: str = ""
    retry_after: int | None = 1  # None: the 429 carries no Retry-After
    seconds: float = 0.0
    action: Callable[[], None] | None = None  # kind "hook": run before the request is served

    def matches(self, path: str) -> bool:
        """Tell whether this fault still applies to a request for `path`."""
        return self.remaining > 0 and path.startswith(self.path_prefix)


@dataclass(frozen=True)
class PasswordAccount:
    """A seeded IMAP-style mailbox: the password, and the server and user name when the form
    must name them (None: any server, the address as user name)."""

    password: str
    imap_host: str | None = None
    imap_port: int = 993
    username: str | None = None


@dataclass
class PendingAuth:
    """A hosted-auth request between the first GET and the user's answer on the sign-in page."""

    id: str
    params: dict[str, str]
    expires_at: float


@dataclass
class AuthorizationCode:
    """A one-time code handed to the redirect URI; exchanged once at /v3/connect/token."""

    code: str
    email: str
    provider: str
    scope: list[str]
    redirect_uri: str
    code_challenge: str | None
    code_challenge_method: str
    access_type: str
    credential_id: str | None
    state: str | None
    expires_at: float
    settings: dict[str, Any] = field(default_factory=dict)
    used: bool = False


@dataclass(frozen=True)
class Mailbox:
    """A seeded mailbox known by several addresses: signing in as any of them gives a grant
    whose `email` is `email` (as Microsoft 365 may name a mailbox by its user principal name)
    and whose `email_aliases` are the others."""

    email: str
    aliases: tuple[str, ...]


@dataclass
class EmulatorState:
    """Hold one emulated Nylas application; safe to share between the server and tests."""

    api_key: str
    client_id: str
    callback_uris: list[str] = field(default_factory=list)
    code_lifetime: float = 600.0
    pending_lifetime: float = 1800.0
    webhook_retry_delays: tuple[float, ...] = (10.0, 60.0)
    webhook_max_attempts: int = 3
    webhook_timeout: float = 10.0
    # Failed notifications in a row that make a destination `failing`, then `failed`: Nylas
    # decides on 95% failures over 15 minutes, then over 72 hours (docs/nylas.md).
    webhook_failing_after: int = 3
    webhook_failed_after: int = 3
    duplicate_deliveries: bool = False
    require_connector: bool = False
    accept_rfc7636_pkce: bool = False
    # What a failed sign-in's redirect carries: "full" (error, error_description, state) or
    # "error_only", since Nylas documents only `error` (docs/nylas.md).
    error_redirects: str = "full"
    # How a re-authenticated grant is notified: "grant.updated" (reauthentication_flag true)
    # or "grant.created"; Nylas' docs do not settle which (docs/nylas.md).
    reauth_notification: str = "grant.updated"
    exchange_refusal_form: str = "oauth"  # oauth | oauth_partial | envelope (errors.REFUSAL_FORMS)
    # Requests per second `POST /v3/connect/custom` admits before answering 429; None: no
    # limit. Nylas publishes no figure; this lets tests and the benchmark reach one.
    custom_auth_rate: float | None = None

    def __post_init__(self) -> None:
        self.lock = threading.RLock()
        self.initial_callback_uris = list(self.callback_uris)
        # Behaviour switches tests change at run time; reset() puts back the constructor's.
        self.initial_switches = {name: getattr(self, name) for name in RESETTABLE_SWITCHES}
        self._custom_auth_bucket: TokenBucket | None = None
        self.dispatcher = WebhookDispatcher(self)
        self.reset()

    def reset(self) -> None:
        """Forget everything but the api key, client id and the constructor's callback URIs."""
        with self.lock:
            self.callback_uris = list(self.initial_callback_uris)
            self.grants: dict[str, dict[str, Any]] = {}
            self.connectors: dict[str, dict[str, Any]] = {}
            self.credentials: dict[str, dict[str, Any]] = {}
            self.webhooks: dict[str, dict[str, Any]] = {}
            self.ews_passwords: dict[str, str] = {}
            # Mailboxes of the password providers (imap, icloud): address -> password and
            # the server the form must name (docs/nylas.md, "Seed format": password_accounts).
            self.password_accounts: dict[str, PasswordAccount] = {}
            self.ews_domains: set[str] = set()
            self.microsoft_domains: set[str] = set()
            self.mailboxes: dict[str, Mailbox] = {}
            # (credential id, tenant): an administrator of the tenant consented through the
            # credential (lower-case tenant); `tenant_domains` maps a tenant to its domains.
            self.consents: set[tuple[str, str]] = set()
            self.tenant_domains: dict[str, set[str]] = {}
            self.pending: dict[str, PendingAuth] = {}
            self.codes: dict[str, AuthorizationCode] = {}
            self.refresh_tokens: dict[str, str] = {}
            self.faults: list[Fault] = []
            self.request_log: list[dict[str, Any]] = []
            self.duplicate_deliveries = False
            for name, value in self.initial_switches.items():
                setattr(self, name, value)
            self._custom_auth_bucket = None
        self.dispatcher.clear_log()

    def add_callback_uri(self, uri: str) -> None:
        """Allow one more redirect URI, as registering it on the Nylas application would."""
        with self.lock:
            if uri not in self.callback_uris:
                self.callback_uris.append(uri)

    def seed(self, data: Mapping[str, Any]) -> None:
        """Add the objects of a JSON seed document (see docs/nylas.md for the format)."""
        with self.lock:
            for uri in data.get("callback_uris", []):
                self.add_callback_uri(uri)
            for grant in data.get("grants", []):
                self.add_grant(**grant)
            for connector in data.get("connectors", []):
                self.add_connector(**connector)
            for credential in data.get("credentials", []):
                self.add_credential(**credential)
            for hook in data.get("webhooks", []):
                self.add_webhook(**hook)
            for email, password in data.get("ews_passwords", {}).items():
                self.ews_passwords[email.lower()] = password
            for email, account in data.get("password_accounts", {}).items():
                self.add_password_account(email, **account)
            self.ews_domains.update(d.lower() for d in data.get("ews_domains", []))
            self.microsoft_domains.update(d.lower() for d in data.get("microsoft_domains", []))
            for mailbox in data.get("mailboxes", []):
                self.add_mailbox(mailbox["email"], mailbox.get("aliases", []))
            for tenant, domains in data.get("tenant_domains", {}).items():
                self.add_tenant_domains(tenant, domains)
            for consent in data.get("consents", []):
                self.record_consent(consent["credential_id"], consent["tenant"])

    def add_password_account(
        self,
        email: str,
        password: str,
        imap_host: str | None = None,
        imap_port: int = 993,
        username: str | None = None,
    ) -> PasswordAccount:
        """A mailbox of a password provider (IMAP): what its sign-in form must be given."""
        account = PasswordAccount(
            password, (imap_host or "").strip().lower() or None, int(imap_port), username
        )
        with self.lock:
            self.password_accounts[email.strip().lower()] = account
        return account

    def add_mailbox(self, email: str, aliases: Iterable[str]) -> Mailbox:
        """Make `email` a mailbox also reached by `aliases` (all compared case-insensitively)."""
        mailbox = Mailbox(email.strip(), tuple(a.strip().lower() for a in aliases if a.strip()))
        with self.lock:
            for address in (mailbox.email, *mailbox.aliases):
                self.mailboxes[address.lower()] = mailbox
        return mailbox

    def add_tenant_domains(self, tenant: str, domains: Iterable[str]) -> None:
        """Make `domains` (e.g. contoso.com) belong to `tenant` (e.g. its Azure tenant id)."""
        with self.lock:
            known = self.tenant_domains.setdefault(tenant.strip().lower(), set())
            known.update(d.strip().lower() for d in domains if d.strip())

    def record_consent(self, credential_id: str, tenant: str) -> None:
        """Remember that an administrator of `tenant` consented through `credential_id`."""
        with self.lock:
            self.consents.add((credential_id, tenant.strip().lower()))

    def tenants_of(self, email: str) -> set[str]:
        """The tenants a mailbox belongs to: those seeded with one of its domains, and a tenant
        named by the domain itself (an administrator may type the verified domain, not the id)."""
        with self.lock:
            mailbox = self.mailboxes.get(email.strip().lower())
            addresses = [email] if mailbox is None else [mailbox.email, *mailbox.aliases]
            # A seeded mailbox is in one tenant whichever of its addresses is given.
            own = {address.rpartition("@")[2].strip().lower() for address in addresses}
            seeded = {t for t, domains in self.tenant_domains.items() if own & domains}
        return seeded | own

    def consented_for(self, credential_id: str, email: str) -> bool:
        """Tell whether the mailbox's tenant consented through this credential."""
        with self.lock:
            return any(
                (credential_id, tenant) in self.consents for tenant in self.tenants_of(email)
            )

    def take_custom_auth_token(self) -> float:
        """Admit one `POST /v3/connect/custom` under `custom_auth_rate`: 0.0 when admitted,
        else the seconds until the next request would be. A changed rate starts a full bucket."""
        with self.lock:
            rate = self.custom_auth_rate
            if rate is None:
                return 0.0
            bucket = self._custom_auth_bucket
            if bucket is None or bucket.rate != rate:
                bucket = self._custom_auth_bucket = TokenBucket(rate)
        return bucket.take()

    def add_grant(
        self,
        email: str,
        provider: str = "microsoft",
        grant_status: str = "valid",
        *,
        id: str | None = None,
        scope: Iterable[str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Store a grant directly (no webhook), e.g. an invalid placeholder with a v2 account_id."""
        stamp = now()
        grant: dict[str, Any] = {
            "id": id or str(uuid.uuid4()),
            "provider": provider,
            "grant_status": grant_status,
            "email": email,
            "scope": list(scope) if scope is not None else list(DEFAULT_SCOPES.get(provider, [])),
            "created_at": stamp,
            "updated_at": stamp,
            "settings": {},
            "provider_user_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"mailto:{email.lower()}")),
        }
        grant.update(extra)
        with self.lock:
            self.grants[grant["id"]] = grant
        return dict(grant)

    def find_grant_by_email(self, email: str) -> dict[str, Any] | None:
        """Return the application's grant for this mailbox; emails compare case-insensitively."""
        wanted = email.strip().lower()
        with self.lock:
            for grant in self.grants.values():
                if str(grant.get("email", "")).lower() == wanted:
                    return grant
        return None

    def authenticate(
        self, email: str, provider: str, scope: list[str], **extra: Any
    ) -> tuple[dict[str, Any], bool]:
        """Make the mailbox's grant valid, creating it if new; fire the matching webhook.

        A seeded mailbox is one mailbox whatever address it signs in with: its grant (found by
        any of its addresses, e.g. a placeholder the import made for the primary address) is
        named by the mailbox's own `email`, as Microsoft 365 may name it by its UPN."""
        with self.lock:
            mailbox = self.mailboxes.get(email.strip().lower())
            addresses = [email]
            if mailbox is not None:
                email, addresses = mailbox.email, [mailbox.email, *mailbox.aliases]
                if provider in ALIAS_PROVIDERS:
                    extra = {**extra, "email": email, "email_aliases": list(mailbox.aliases)}
            found = (self.find_grant_by_email(address) for address in addresses)
            grant = next((g for g in found if g is not None), None)
            created = grant is None
            if grant is None:
                extra.pop("email", None)
                grant = self.add_grant(email, provider, scope=scope, **extra)
            else:
                # Re-authentication keeps the grant id; only the credentials and status change.
                grant.update(extra, provider=provider, scope=scope, grant_status="valid")
                grant["updated_at"] = max(now(), int(grant["updated_at"]) + 1)
            snapshot = dict(grant)
        if created or self.reauth_notification == "grant.created":
            self.dispatcher.emit("grant.created", snapshot)
        else:
            self.dispatcher.emit("grant.updated", snapshot, reauthentication=True)
        return snapshot, created

    def expire_grant(self, grant_id: str) -> dict[str, Any]:
        """Flip a grant to invalid and fire grant.expired; KeyError when it does not exist."""
        with self.lock:
            grant = self.grants[grant_id]
            grant["grant_status"] = "invalid"
            snapshot = dict(grant)
        self.dispatcher.emit("grant.expired", snapshot)
        return snapshot

    def delete_grant(self, grant_id: str) -> dict[str, Any]:
        """Remove a grant for good and fire grant.deleted; KeyError when it does not exist."""
        with self.lock:
            grant = self.grants.pop(grant_id)
        self.dispatcher.emit("grant.deleted", grant)
        return grant

    def add_connector(self, provider: str, **fields: Any) -> dict[str, Any]:
        """Store (or replace) the application's connector for `provider`."""
        connector = {"provider": provider, "name": fields.pop("name", f"{provider} connector")}
        connector.update({"settings": {}, "scope": []})
        connector.update(fields)
        with self.lock:
            self.connectors[provider] = connector
        return connector

    def add_credential(
        self, provider: str, name: str, credential_type: str = "connector", **fields: Any
    ) -> dict[str, Any]:
        """Store a connector credential; its `credential_data` is kept but never served."""
        stamp = now()
        credential: dict[str, Any] = {
            "id": fields.pop("id", None) or str(uuid.uuid4()),
            "provider": provider,
            "name": name,
            "credential_type": credential_type,
            "credential_data": dict(fields.pop("credential_data", {})),
            "created_at": stamp,
            "updated_at": stamp,
        }
        credential.update(fields)
        with self.lock:
            self.credentials[credential["id"]] = credential
        return credential

    def add_webhook(self, webhook_url: str, trigger_types: list[str], **fields: Any) -> dict:
        """Store a webhook destination as already verified (seeding skips the challenge)."""
        stamp = now()
        hook: dict[str, Any] = {
            "id": fields.pop("id", None) or str(uuid.uuid4()),
            "webhook_url": webhook_url,
            "trigger_types": list(trigger_types),
            "webhook_secret": fields.pop("webhook_secret", None) or secrets.token_hex(32),
            "status": "active",
            "description": None,
            "notification_email_addresses": [],
            "status_updated_at": stamp,
            "created_at": stamp,
            "updated_at": stamp,
        }
        hook.update(fields)
        with self.lock:
            self.webhooks[hook["id"]] = hook
        return hook

    def add_fault(
        self,
        kind: str,
        count: int = 1,
        path_prefix: str = "",
        retry_after: int | None = 1,
        seconds: float = 0.0,
    ) -> Fault:
        """Make the next `count` requests under `path_prefix` fail (or slow down) as `kind`."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(FAULT_KINDS)}")
        fault = Fault(kind, count, path_prefix, retry_after, seconds)
        with self.lock:
            self.faults.append(fault)
        return fault

    def add_hook(self, action: Callable[[], None], path_prefix: str = "", count: int = 1) -> Fault:
        """Run `action` (in the serving thread) before each of the next `count` requests under
        `path_prefix` is served as usual: a test's way to act at a precise moment, e.g. cut
        the portal's database while its code exchange is at Nylas. Python only, not HTTP."""
        fault = Fault("hook", count, path_prefix, action=action)
        with self.lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, path: str) -> Fault | None:
        """Consume and return the first fault that applies to `path`, if any."""
        with self.lock:
            for fault in self.faults:
                if fault.matches(path):
                    fault.remaining -= 1
                    return fault
        return None

    def record_request(self, entry: dict[str, Any]) -> None:
        """Append one (already redacted) request to the log tests read."""
        with self.lock:
            self.request_log.append(entry)

    @property
    def deliveries(self) -> list[dict[str, Any]]:
        """Return the outgoing webhook attempts so far (no secrets, no bodies)."""
        return self.dispatcher.log_snapshot()

    def wait_for_deliveries(self, timeout: float = 10.0) -> bool:
        """Block until every queued webhook delivery is finished; False on timeout."""
        return self.dispatcher.wait_idle(timeout)
