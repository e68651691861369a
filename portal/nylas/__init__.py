"""The only package that talks to Nylas: a thin gateway over the official `nylas` SDK.

Every call has a timeout, is logged as one line (method, path, status, request_id, duration;
never tokens, codes, secrets or the API key), and fails with one of the typed errors of
`portal.nylas.errors`. Idempotent calls are retried on 429 (honouring Retry-After), 5xx,
timeouts and connection errors (`portal.nylas.retry`); nothing that creates something or spends
a one-time code is. docs/nylas-client.md explains the policy.
"""

from portal.nylas.errors import (
    NylasAuthError,
    NylasError,
    NylasNotFound,
    NylasOAuthError,
    NylasRateLimited,
    NylasUnavailable,
    map_error,
    parse_retry_after,
)
from portal.nylas.gateway import (
    ALIAS_PROVIDERS,
    AuthResult,
    AuthUrl,
    Connector,
    Credential,
    Grant,
    NylasGateway,
    ProviderDetectResponse,
    Webhook,
    WebhookWithSecret,
    current_gateway,
)
from portal.nylas.retry import RetryPolicy

__all__ = [
    "ALIAS_PROVIDERS",
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
    "map_error",
    "parse_retry_after",
]
