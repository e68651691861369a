"""The typed errors of Nylas calls, and how SDK and transport failures map onto them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import requests
from nylas.models.errors import NylasOAuthError as SdkOAuthError
from nylas.models.errors import NylasSdkTimeoutError

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


def map_error(raw: Exception, timeout: float, *, token_endpoint: bool = False) -> NylasError:
    """Turn an SDK or transport exception into one of the portal's typed errors.

    On the token endpoint (`token_endpoint`), a refusal (4xx other than 429) is a
    NylasOAuthError in whichever form Nylas wrote it: the OAuth body, the same body missing
    keys, or the standard `{request_id, error: {type, message}}` envelope (docs/nylas.md).
    """
    if isinstance(raw, NylasSdkTimeoutError):
        return NylasUnavailable(f"Nylas did not answer within {timeout} seconds")
    if isinstance(raw, requests.exceptions.JSONDecodeError):
        return NylasUnavailable("Nylas answered with something that is not JSON")
    if isinstance(raw, requests.RequestException):
        return NylasUnavailable(f"cannot reach Nylas: {type(raw).__name__}")
    headers = getattr(raw, "headers", None) or {}
    status = getattr(raw, "status_code", None)
    said = what_nylas_said(raw)
    request_id = said.request_id or getattr(raw, "request_id", None) or header_request_id(headers)
    refused = status != 429 and (status or 0) < 500
    if refused and (token_endpoint or isinstance(raw, SdkOAuthError)):
        return NylasOAuthError(
            said.message or said.error_type or "the code exchange was refused",
            error=said.error_type or "oauth_error",
            error_code=said.error_code,
            status=status,
            request_id=request_id,
        )
    common: dict[str, Any] = {
        "status": status,
        "request_id": request_id,
        "error_type": said.error_type,
    }
    message = said.message or "Nylas API error"
    if status in (401, 403):
        return NylasAuthError(message, **common)
    if status == 404:
        return NylasNotFound(message, **common)
    if status == 429:
        return NylasRateLimited(message, retry_after=parse_retry_after(headers), **common)
    if status is not None and status >= 500:
        return NylasUnavailable(message, **common)
    return NylasError(message, **common)


@dataclass(frozen=True)
class ErrorBody:
    """What an error answer said, whichever of Nylas' two error forms it used."""

    error_type: str | None = None
    message: str | None = None
    error_code: int | str | None = None
    request_id: str | None = None


def what_nylas_said(raw: Exception) -> ErrorBody:
    """Read an SDK error; when the SDK could not parse the body (it then keeps the whole
    body as the message, with type "unknown"), read the body itself."""
    if isinstance(raw, SdkOAuthError):
        return ErrorBody(raw.error, raw.error_description or None, raw.error_code)
    message = raw.args[0] if raw.args else None
    if isinstance(message, Mapping):
        return error_body(message)
    error_type = getattr(raw, "type", None)
    return ErrorBody(error_type, message if isinstance(message, str) else None)


def error_body(body: Mapping[str, Any]) -> ErrorBody:
    """Parse `{request_id, error: {type, message}}` or `{error, error_description, ...}`."""
    request_id = text_or_none(body.get("request_id"))
    error = body.get("error")
    if isinstance(error, Mapping):
        return ErrorBody(
            text_or_none(error.get("type")), text_or_none(error.get("message")), None, request_id
        )
    return ErrorBody(
        text_or_none(error),
        text_or_none(body.get("error_description") or body.get("message")),
        body.get("error_code") if isinstance(body.get("error_code"), int | str) else None,
        request_id,
    )


def text_or_none(value: object) -> str | None:
    return value[:500] if isinstance(value, str) and value else None


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
