"""The only module that talks to Nylas: a thin gateway over the official `nylas` SDK.

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
from email.utils import parsedate_to_datetime
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
from nylas.models.webhooks import Webhook, WebhookWithSecret

from portal.plugins import AuthResult
from portal.scopes import split_scopes

__all__ = [
    "AuthResult",
    "AuthUrl",
    "Connector",
    "Credential",
    "Grant",
    "NylasAuthError",
    "NylasError",
    "NylasGateway",
    "NylasNotFound",
    "NylasOAuthError",
    "NylasRateLimited",
    "NylasUnavailable",
    "ProviderDetectResponse",
    "RetryPolicy",
    "Webhook",
    "WebhookWithSecret",
    "current_gateway",
]

log = logging.getLogger(__name__)
T = TypeVar("T")
EXTENSION_KEY = "reauth_nylas"
GRANT_PAGE_SIZE = 200  # the largest page Nylas serves
# Query parameters the gateway sets itself; a plugin's extra params may not override them.
RESERVED_AUTH_PARAMS = frozenset(
    {"client_id", "redirect_uri", "response_type", "code_challenge", "code_challenge_method"}
)
REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-nylas-request-id")


class NylasError(Exception):
    """A Nylas call failed; `status` and `request_id` are kept for support tickets."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.request_id = request_id
        self.error_type = error_type

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"status {self.status}")
        if self.request_id:
            parts.append(f"request_id {self.request_id}")
        return " | ".join(parts)


class NylasAuthError(NylasError):
    """401/403: the API key is wrong or rotated, or the region does not match."""


class NylasNotFound(NylasError):
    """404: no such grant, connector, credential or endpoint."""


class NylasRateLimited(NylasError):
    """429: too many requests; `retry_after` is Nylas' hint in seconds, when given."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class NylasUnavailable(NylasError):
    """5xx, a timeout, a refused connection or an answer that is not Nylas JSON."""


class NylasOAuthError(NylasError):
    """The token endpoint refused an exchange (bad, reused or expired code; wrong verifier)."""

    def __init__(
        self, message: str, *, error: str, error_code: int | str | None, **kwargs: Any
    ) -> None:
        super().__init__(message, error_type=error, **kwargs)
        self.error = error
        self.error_code = error_code
        self.description = message


@dataclass(frozen=True)
class AuthUrl:
    """A hosted-auth URL and the PKCE verifier to keep server-side for the exchange."""

    url: str
    code_verifier: str

    def __repr__(self) -> str:  # the verifier must not end up in logs through a repr
        return f"AuthUrl(url={self.url!r}, code_verifier='***')"


@dataclass(frozen=True)
class RetryPolicy:
    """How idempotent calls are retried: exponential backoff, Retry-After honoured."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    # A Retry-After longer than this is not waited for: the caller gets NylasRateLimited.
    max_retry_after: float = 60.0

    def delay(self, attempt: int, error: NylasError, jitter: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up."""
        if isinstance(error, NylasRateLimited) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return error.retry_after
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return backoff / 2 + backoff / 2 * jitter  # "equal jitter": spread workers apart


def is_retryable(error: NylasError) -> bool:
    return isinstance(error, NylasRateLimited | NylasUnavailable)


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
    def from_config(cls, config: Mapping[str, Any], **options: Any) -> NylasGateway:
        """Build a gateway from the portal's settings (NYLAS_* and OAUTH_REDIRECT_URI)."""
        return cls(
            api_key=config["NYLAS_API_KEY"],
            client_id=config["NYLAS_CLIENT_ID"],
            api_uri=config["NYLAS_API_URI"],
            timeout=config.get("NYLAS_TIMEOUT") or 15,
            redirect_uri=config.get("OAUTH_REDIRECT_URI"),
            **options,
        )

    # -- hosted authentication -------------------------------------------------------------

    def auth_url(
        self,
        *,
        provider: str,
        scopes: Sequence[str] = (),
        login_hint: str | None = None,
        state: str | None = None,
        credential_id: str | None = None,
        extra_params: Mapping[str, str] | None = None,
        redirect_uri: str | None = None,
    ) -> AuthUrl:
        """Build a hosted-auth URL with Nylas-style PKCE; no network call."""
        clash = RESERVED_AUTH_PARAMS.intersection(extra_params or {})
        if clash:
            raise ValueError(f"extra params may not set {', '.join(sorted(clash))}")
        config: dict[str, Any] = dict(extra_params or {})
        config.update(client_id=self.client_id, redirect_uri=self._redirect_uri(redirect_uri))
        config["provider"] = provider
        optional = {"login_hint": login_hint, "state": state, "credential_id": credential_id}
        config.update({key: value for key, value in optional.items() if value})
        if scopes:
            config["scope"] = list(scopes)
        pkce = self._client.auth.url_for_oauth2_pkce(config)  # type: ignore[arg-type]
        return AuthUrl(url=pkce.url, code_verifier=pkce.secret)

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
            "/v3/connect/token",
            lambda: self._client.auth.exchange_code_for_token(request),  # type: ignore[arg-type]
            idempotent=False,
        )
        return AuthResult(
            grant_id=answer.grant_id,
            email=(answer.email or "").lower(),
            provider=answer.provider,
            scopes=split_scopes(answer.scope),
        )

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

    # -- application and webhooks -----------------------------------------------------------

    def list_callback_uris(self) -> list[str]:
        """The callback (redirect) URIs registered on the Nylas application."""
        response = self._call(
            "GET",
            "/v3/applications/redirect-uris",
            self._client.applications.redirect_uris.list,
            idempotent=True,
        )
        return [item.url for item in response.data]

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

    def rotate_webhook_secret(self, webhook_id: str) -> WebhookWithSecret:
        """Issue a new webhook secret; each call makes a different one, so it is not retried."""
        response = self._call(
            "PUT",
            f"/v3/webhooks/{webhook_id}/rotate-secret",
            lambda: self._client.webhooks.rotate_secret(webhook_id),
            idempotent=False,
        )
        return response.data

    # -- machinery -------------------------------------------------------------------------

    def _redirect_uri(self, override: str | None) -> str:
        uri = override or self.redirect_uri
        if not uri:
            raise ValueError("no redirect_uri: configure OAUTH_REDIRECT_URI or pass one")
        return uri

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
                error = map_error(raw, self.timeout)
                log_call(method, path, error.status, error.request_id, started, attempt)
                delay = self._retry_delay(attempt, error, idempotent)
                if delay is None:
                    raise error from None
                self._sleep(delay)
                attempt += 1
                continue
            log_call(method, path, 200, getattr(result, "request_id", None), started, attempt)
            return result

    def _retry_delay(self, attempt: int, error: NylasError, idempotent: bool) -> float | None:
        if not (idempotent and is_retryable(error) and attempt < self.retry.max_attempts):
            return None
        return self.retry.delay(attempt, error, self._jitter())


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


def map_error(raw: Exception, timeout: float) -> NylasError:
    """Turn an SDK or transport exception into one of the portal's typed errors."""
    if isinstance(raw, NylasSdkTimeoutError):
        return NylasUnavailable(f"Nylas did not answer within {timeout} seconds")
    if isinstance(raw, requests.exceptions.JSONDecodeError):
        return NylasUnavailable("Nylas answered with something that is not JSON")
    if isinstance(raw, requests.RequestException):
        return NylasUnavailable(f"cannot reach Nylas: {type(raw).__name__}")
    headers = getattr(raw, "headers", None) or {}
    request_id = getattr(raw, "request_id", None) or header_request_id(headers)
    status = getattr(raw, "status_code", None)
    if isinstance(raw, SdkOAuthError) and status != 429 and (status or 0) < 500:
        return NylasOAuthError(
            raw.error_description or raw.error,
            error=raw.error,
            error_code=raw.error_code,
            status=status,
            request_id=request_id,
        )
    # Throttling and outages look the same on the token endpoint as anywhere else.
    error_type = raw.error if isinstance(raw, SdkOAuthError) else getattr(raw, "type", None)
    message = raw.args[0] if raw.args and isinstance(raw.args[0], str) else "Nylas API error"
    common: dict[str, Any] = {"status": status, "request_id": request_id, "error_type": error_type}
    if status in (401, 403):
        return NylasAuthError(message, **common)
    if status == 404:
        return NylasNotFound(message, **common)
    if status == 429:
        return NylasRateLimited(message, retry_after=parse_retry_after(headers), **common)
    if status is not None and status >= 500:
        return NylasUnavailable(message, **common)
    return NylasError(message, **common)


def header_request_id(headers: Mapping[str, str]) -> str | None:
    lowered = {key.lower(): value for key, value in headers.items()}
    return next((lowered[name] for name in REQUEST_ID_HEADERS if lowered.get(name)), None)


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Retry-After as seconds (the form Nylas sends) or as an HTTP date."""
    value = next((v for k, v in headers.items() if k.lower() == "retry-after"), None)
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def current_gateway() -> NylasGateway:
    """The gateway of the current Flask app, built from its configuration on first use."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    gateway = app.extensions.get(EXTENSION_KEY)
    if gateway is None:
        gateway = app.extensions[EXTENSION_KEY] = NylasGateway.from_config(app.config)
    assert isinstance(gateway, NylasGateway)
    return gateway
