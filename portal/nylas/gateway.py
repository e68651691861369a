"""The gateway: every call the portal makes to Nylas, through the official `nylas` SDK.

Every call has a timeout, is logged as one line (method, path, status, request_id, duration;
never tokens, codes, secrets or the API key), and fails with one of the typed errors below.
Idempotent calls are retried on 429 (honouring Retry-After), 5xx, timeouts and connection
errors; nothing that creates something or spends a one-time code is. docs/nylas-client.md
explains the policy.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from flask import current_app
from nylas import Client
from nylas.models.auth import ProviderDetectResponse
from nylas.models.connectors import Connector
from nylas.models.credentials import Credential
from nylas.models.errors import NylasApiError, NylasSdkTimeoutError
from nylas.models.errors import NylasOAuthError as SdkOAuthError
from nylas.models.grants import Grant
from nylas.models.redirect_uri import RedirectUri
from nylas.models.webhooks import Webhook, WebhookWithSecret

from portal.extensions import settings_of
from portal.nylas.errors import (
    NylasError,
    map_error,
)
from portal.nylas.retry import RetryPolicy, is_retryable
from portal.plugins import AuthResult, HostedAuthRequest
from portal.scopes import split_scopes
from portal.settings import Settings
from portal.signing import MAX_STATE_LENGTH

log = logging.getLogger(__name__)
T = TypeVar("T")
EXTENSION_KEY = "reauth_nylas"
EXCHANGE_PATH = "/v3/connect/token"
CUSTOM_AUTH_PATH = "/v3/connect/custom"
GRANT_PAGE_SIZE = 200  # the largest page Nylas serves
# Nylas serves `email_aliases` only for these providers (GET /v3/grants/{id}?expose_aliases=true).
ALIAS_PROVIDERS = frozenset({"microsoft", "google"})
# Query parameters the gateway sets itself; a plugin's extra params may not override them.
RESERVED_AUTH_PARAMS = frozenset(
    {"client_id", "redirect_uri", "response_type", "code_challenge", "code_challenge_method"}
)


@dataclass(frozen=True)
class AuthUrl:
    """A hosted-auth URL and the PKCE verifier to keep server-side for the exchange."""

    url: str
    code_verifier: str

    def __repr__(self) -> str:  # the verifier must not end up in logs through a repr
        return f"AuthUrl(url={self.url!r}, code_verifier='***')"


class NylasGateway:
    """Calls Nylas through the SDK with timeouts, retries, typed errors and safe logging."""

    def __init__(
        self,
        api_key: str,
        client_id: str,
        api_uri: str,
        *,
        timeout: float = 15,
        redirect_uri: str | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.client_id = client_id
        self.api_uri = api_uri.rstrip("/")
        self.timeout = timeout
        self.redirect_uri = redirect_uri
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._jitter = jitter
        # The SDK annotates timeout as int but hands it to requests, which takes floats.
        self._client = Client(api_key=api_key, api_uri=self.api_uri, timeout=timeout)  # type: ignore[arg-type]

    @classmethod
    def from_settings(cls, settings: Settings, **options: Any) -> NylasGateway:
        """Build a gateway from the portal's settings (NYLAS_* and OAUTH_REDIRECT_URI)."""
        return cls(
            api_key=settings.nylas_api_key,
            client_id=settings.nylas_client_id,
            api_uri=settings.nylas_api_uri,
            timeout=settings.nylas_timeout or 15,
            redirect_uri=settings.oauth_redirect_uri,
            **options,
        )

    # -- hosted authentication -------------------------------------------------------------

    def auth_url(
        self,
        request: HostedAuthRequest,
        *,
        state: str | None = None,
        redirect_uri: str | None = None,
    ) -> AuthUrl:
        """Build a hosted-auth URL with Nylas-style PKCE for a plugin's request; no network call."""
        clash = RESERVED_AUTH_PARAMS.intersection(request.extra_params)
        if clash:
            raise ValueError(f"extra params may not set {', '.join(sorted(clash))}")
        config: dict[str, Any] = dict(request.extra_params)
        config.update(client_id=self.client_id, redirect_uri=self._redirect_uri(redirect_uri))
        config["provider"] = request.provider
        optional = {
            "login_hint": request.login_hint,
            "state": state,
            "credential_id": request.credential_id,
        }
        config.update({key: value for key, value in optional.items() if value})
        if request.scopes:
            config["scope"] = list(request.scopes)
        pkce = self._client.auth.url_for_oauth2_pkce(config)  # type: ignore[arg-type]
        return AuthUrl(url=pkce.url, code_verifier=pkce.secret)

    def admin_consent_url(
        self, credential_id: str, state: str, *, redirect_uri: str | None = None
    ) -> str:
        """Build the hosted admin-consent URL for a tenant's administrator; no network call.

        The SDK's `url_for_admin_consent` sets `provider=microsoft` and
        `response_type=adminconsent`; Nylas requires `credential_id`, the id of an
        `adminconsent` credential of the Microsoft connector. Nylas sends the administrator
        back to `redirect_uri` with `admin_consent=true` and `state` (or an OAuth `error`).
        """
        if not credential_id.strip():
            raise ValueError("admin consent needs the id of an adminconsent credential")
        if not state or len(state) > MAX_STATE_LENGTH:
            raise ValueError(f"state must be 1 to {MAX_STATE_LENGTH} characters (Nylas' limit)")
        config = {
            "client_id": self.client_id,
            "redirect_uri": self._redirect_uri(redirect_uri),
            "credential_id": credential_id,
            "state": state,
        }
        return self._client.auth.url_for_admin_consent(config)  # type: ignore[arg-type]

    def exchange_code(
        self, code: str, code_verifier: str, *, redirect_uri: str | None = None
    ) -> AuthResult:
        """Exchange a one-time code; never retried, since a code cannot be spent twice."""
        request = {
            "client_id": self.client_id,
            "redirect_uri": self._redirect_uri(redirect_uri),
            "code": code,
            "code_verifier": code_verifier,
        }
        answer = self._call(
            "POST",
            EXCHANGE_PATH,
            lambda: self._client.auth.exchange_code_for_token(request),  # type: ignore[arg-type]
            idempotent=False,
        )
        return AuthResult(
            grant_id=answer.grant_id,
            email=(answer.email or "").lower(),
            provider=answer.provider,
            scopes=split_scopes(answer.scope),
        )

    def custom_auth_microsoft(self, email: str, credential_id: str) -> Grant:
        """Microsoft bulk auth: re-authenticate (same grant id) or create the address's grant
        through a tenant whose administrator consented via the `adminconsent` credential.

        Retried (idempotent): Nylas keeps one grant per address, so repeating the request
        after a lost answer re-authenticates the same grant again and returns the same id; a
        repeat leaves only one more `grant.updated` notification for an already valid grant.
        The answer does not say whether the grant is new: callers compare its id with the
        placeholder's. A refusal (unknown credential, wrong type, no consent for the tenant)
        is a 400 `NylasError`, never retried; 429 is `NylasRateLimited` after the retries.
        """
        body = {
            "provider": "microsoft",
            "settings": {"email_address": email, "credential_id": credential_id},
        }
        response = self._call(
            "POST",
            CUSTOM_AUTH_PATH,
            lambda: self._client.auth.custom_authentication(body),  # type: ignore[arg-type]
            idempotent=True,
        )
        return response.data

    def detect_provider(
        self, email: str, *, all_provider_types: bool = False
    ) -> ProviderDetectResponse:
        """Ask Nylas which provider serves an address (a POST that only reads: retried)."""
        params: dict[str, Any] = {"email": email}
        if all_provider_types:
            params["all_provider_types"] = "true"
        response = self._call(
            "POST",
            "/v3/providers/detect",
            lambda: self._client.auth.detect_provider(params),  # type: ignore[arg-type]
            idempotent=True,
        )
        return response.data

    # -- grants ----------------------------------------------------------------------------

    def list_grants(
        self,
        *,
        provider: str | None = None,
        grant_status: str | None = None,
        email: str | None = None,
        account_id: str | None = None,
        page_size: int = GRANT_PAGE_SIZE,
    ) -> Iterator[Grant]:
        """Yield every grant matching the filters, fetching one offset page at a time."""
        filters = {
            "provider": provider,
            "grant_status": grant_status,
            "email": email,
            "account_id": account_id,
        }
        query = {key: value for key, value in filters.items() if value}
        return self._paged("/v3/grants", self._client.grants.list, query, page_size)

    def get_grant(self, grant_id: str) -> Grant:
        response = self._call(
            "GET",
            f"/v3/grants/{grant_id}",
            lambda: self._client.grants.find(grant_id),
            idempotent=True,
        )
        return response.data

    def grant_aliases(self, grant_id: str) -> list[str]:
        """The other addresses of a grant's mailbox (lower case), as Nylas lists them.

        The SDK's `grants.find` takes no query and its Grant model has no `email_aliases`, so
        this reads the raw answer; providers without aliases answer none.
        """
        answer = self._raw(
            "GET", f"/v3/grants/{grant_id}", query={"expose_aliases": "true"}, idempotent=True
        )
        data = answer.get("data")
        aliases = (data.get("email_aliases") or []) if isinstance(data, dict) else []
        return [str(alias).strip().lower() for alias in aliases if str(alias).strip()]

    # -- connectors and their credentials ---------------------------------------------------

    def get_connector(self, provider: str) -> Connector:
        response = self._call(
            "GET",
            f"/v3/connectors/{provider}",
            lambda: self._client.connectors.find(provider),  # type: ignore[arg-type]
            idempotent=True,
        )
        return response.data

    def list_connectors(self, page_size: int = 50) -> Iterator[Connector]:
        return self._paged("/v3/connectors", self._client.connectors.list, {}, page_size)

    def create_connector(
        self,
        provider: str,
        *,
        settings: Mapping[str, Any] | None = None,
        scope: Sequence[str] | None = None,
    ) -> Connector:
        """Create the connector of a provider (one per provider per application); not retried,
        since a second POST after a lost answer would meet the first one's connector (409)."""
        body: dict[str, Any] = {"provider": provider}
        if settings is not None:
            body["settings"] = dict(settings)
        if scope is not None:
            body["scope"] = list(scope)
        response = self._call(
            "POST",
            "/v3/connectors",
            lambda: self._client.connectors.create(body),  # type: ignore[arg-type]
            idempotent=False,
        )
        return response.data

    def update_connector(
        self,
        provider: str,
        *,
        settings: Mapping[str, Any] | None = None,
        scope: Sequence[str] | None = None,
        active_credential_id: str | None = None,
    ) -> Connector:
        """PATCH a connector; setting the same values twice is harmless, so it is retried."""
        body: dict[str, Any] = {}
        if settings is not None:
            body["settings"] = dict(settings)
        if scope is not None:
            body["scope"] = list(scope)
        if active_credential_id is not None:
            body["active_credential_id"] = active_credential_id
        response = self._call(
            "PATCH",
            f"/v3/connectors/{provider}",
            lambda: self._client.connectors.update(provider, body),  # type: ignore[arg-type]
            idempotent=True,
        )
        return response.data

    def list_credentials(self, provider: str, page_size: int = 50) -> Iterator[Credential]:
        def fetch(query: dict[str, Any]) -> Any:
            return self._client.connectors.credentials.list(provider, query)  # type: ignore[arg-type]

        return self._paged(f"/v3/connectors/{provider}/creds", fetch, {}, page_size)

    def create_credential(
        self,
        provider: str,
        *,
        name: str,
        credential_data: Mapping[str, Any],
        credential_type: str = "connector",
    ) -> Credential:
        """Create a connector credential (e.g. another Azure tenant's app); not retried."""
        body = {
            "name": name,
            "credential_type": credential_type,
            "credential_data": dict(credential_data),
        }
        response = self._call(
            "POST",
            f"/v3/connectors/{provider}/creds",
            lambda: self._client.connectors.credentials.create(provider, body),  # type: ignore[arg-type]
            idempotent=False,
        )
        return response.data

    def delete_credential(self, provider: str, credential_id: str) -> None:
        """Delete a connector credential; retried (deleting twice leaves it deleted).

        A credential that does not exist is `NylasNotFound`, also when a retry follows a
        delete whose answer was lost: callers removing a credential treat it as done.
        """
        self._call(
            "DELETE",
            f"/v3/connectors/{provider}/creds/{credential_id}",
            lambda: self._client.connectors.credentials.destroy(provider, credential_id),  # type: ignore[arg-type]
            idempotent=True,
        )

    # -- application and webhooks -----------------------------------------------------------

    def list_callback_uris(self) -> list[str]:
        """The callback (redirect) URIs registered on the Nylas application.

        Read raw: the SDK's list parser raises KeyError on an answer without `request_id`,
        which Nylas' reference does not promise for this endpoint (docs/nylas.md).
        """
        answer = self._raw("GET", "/v3/applications/redirect-uris", idempotent=True)
        items = answer.get("data") or []
        uris = [RedirectUri.from_dict(item, infer_missing=True) for item in items]  # type: ignore[attr-defined]
        return [uri.url for uri in uris if uri.url]

    def create_webhook(
        self,
        webhook_url: str,
        trigger_types: Sequence[str],
        *,
        description: str | None = None,
        notification_email_addresses: Sequence[str] = (),
    ) -> WebhookWithSecret:
        """Create a webhook destination; the answer carries the secret, shown only now."""
        body: dict[str, Any] = {"webhook_url": webhook_url, "trigger_types": list(trigger_types)}
        if description:
            body["description"] = description
        if notification_email_addresses:
            body["notification_email_addresses"] = list(notification_email_addresses)
        response = self._call(
            "POST",
            "/v3/webhooks",
            lambda: self._client.webhooks.create(body),  # type: ignore[arg-type]
            idempotent=False,
        )
        return response.data

    def list_webhooks(self) -> list[Webhook]:
        response = self._call("GET", "/v3/webhooks", self._client.webhooks.list, idempotent=True)
        return list(response.data)

    def update_webhook(
        self,
        webhook_id: str,
        *,
        status: str | None = None,
        webhook_url: str | None = None,
        trigger_types: Sequence[str] | None = None,
        description: str | None = None,
    ) -> Webhook:
        """PUT a destination's fields; setting the same values twice is harmless: retried.

        `status` may be `active` (re-activation: Nylas challenges the URL first) or `pause`.
        The SDK's UpdateWebhookRequest has no `status`, so a status change is sent raw.
        """
        body: dict[str, Any] = {}
        if webhook_url is not None:
            body["webhook_url"] = webhook_url
        if trigger_types is not None:
            body["trigger_types"] = list(trigger_types)
        if description is not None:
            body["description"] = description
        path = f"/v3/webhooks/{webhook_id}"
        if status is None:
            response = self._call(
                "PUT",
                path,
                lambda: self._client.webhooks.update(webhook_id, body),  # type: ignore[arg-type]
                idempotent=True,
            )
            return response.data
        answer = self._raw("PUT", path, body={**body, "status": status}, idempotent=True)
        return Webhook.from_dict(answer.get("data") or {}, infer_missing=True)  # type: ignore[attr-defined]

    def rotate_webhook_secret(self, webhook_id: str) -> WebhookWithSecret:
        """Issue a new webhook secret; each call makes a different one, so it is not retried.

        Nylas serves `POST /v3/webhooks/rotate-secret/{id}`; the Python SDK's `rotate_secret`
        sends `PUT /v3/webhooks/{id}/rotate-secret`, which the real API refuses (docs/nylas.md).
        """
        answer = self._raw(
            "POST", f"/v3/webhooks/rotate-secret/{webhook_id}", body={}, idempotent=False
        )
        return WebhookWithSecret.from_dict(answer.get("data") or {})  # type: ignore[attr-defined]

    # -- machinery -------------------------------------------------------------------------

    def _redirect_uri(self, override: str | None) -> str:
        uri = override or self.redirect_uri
        if not uri:
            raise ValueError("no redirect_uri: configure OAUTH_REDIRECT_URI or pass one")
        return uri

    def _raw(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        idempotent: bool,
    ) -> dict[str, Any]:
        """One call the SDK has no (correct) method for, through the SDK's own HTTP client:
        the same API key, timeout and error parsing, then `_call`'s logging and retries."""

        def operation() -> dict[str, Any]:
            answer, _headers = self._client.http_client._execute(
                method=method,
                path=path,
                query_params=dict(query) if query else None,
                request_body=dict(body) if body is not None else None,
            )
            return answer if isinstance(answer, dict) else {}

        return self._call(method, path, operation, idempotent=idempotent)

    def _paged(
        self,
        path: str,
        fetch: Callable[[dict[str, Any]], Any],
        query: Mapping[str, Any],
        page_size: int,
    ) -> Iterator[Any]:
        """Walk offset pages until one comes back short; each page is retried on its own."""
        offset = 0
        while True:
            params = {**query, "limit": page_size, "offset": offset}
            page = self._call("GET", path, lambda p=params: fetch(p), idempotent=True)  # type: ignore[misc]
            yield from page.data
            if len(page.data) < page_size:
                return
            offset += len(page.data)

    def _call(self, method: str, path: str, operation: Callable[[], T], *, idempotent: bool) -> T:
        """Run one SDK call with logging, error mapping and, when idempotent, retries."""
        attempt = 1
        while True:
            started = time.monotonic()
            try:
                result = operation()
            except (
                NylasApiError,
                SdkOAuthError,
                NylasSdkTimeoutError,
                requests.RequestException,
            ) as raw:
                error = map_error(raw, self.timeout, token_endpoint=path == EXCHANGE_PATH)
                log_call(method, path, error.status, error.request_id, started, attempt)
                delay = self._retry_delay(attempt, error, idempotent)
                if delay is None:
                    raise error from None
                self._sleep(delay)
                attempt += 1
                continue
            log_call(method, path, 200, answer_request_id(result), started, attempt)
            return result

    def _retry_delay(self, attempt: int, error: NylasError, idempotent: bool) -> float | None:
        if not (idempotent and is_retryable(error) and attempt < self.retry.max_attempts):
            return None
        return self.retry.delay(attempt, error, self._jitter())


def answer_request_id(result: object) -> str | None:
    """The request id of an SDK response object or of a raw answer."""
    if isinstance(result, dict):
        return result.get("request_id")
    return getattr(result, "request_id", None)


def log_call(
    method: str, path: str, status: int | None, request_id: str | None, started: float, attempt: int
) -> None:
    duration_ms = (time.monotonic() - started) * 1000
    log.info(
        "nylas %s %s status=%s request_id=%s duration_ms=%.0f attempt=%d",
        method,
        path,
        status if status is not None else "-",
        request_id or "-",
        duration_ms,
        attempt,
    )


def current_gateway() -> NylasGateway:
    """The gateway of the current Flask app, built from its configuration on first use."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    gateway = app.extensions.get(EXTENSION_KEY)
    if gateway is None:
        gateway = app.extensions[EXTENSION_KEY] = NylasGateway.from_settings(settings_of(app))
    assert isinstance(gateway, NylasGateway)
    return gateway
