"""How idempotent Nylas calls are retried: exponential backoff, Retry-After honoured."""

from __future__ import annotations

from dataclasses import dataclass

from portal.nylas.errors import NylasError, NylasRateLimited, NylasUnavailable


@dataclass(frozen=True)
class RetryPolicy:
    """How idempotent calls are retried: exponential backoff, Retry-After honoured."""

    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0
    # A Retry-After longer than this is not waited for: the caller gets NylasRateLimited.
    max_retry_after: float = 60.0
    # Nylas' own 429 (`nylas_rate_limit_exceeded`) often has no Retry-After: back off at
    # least this long, since an immediate retry only spends more of the limit.
    rate_limit_floor: float = 1.0

    def delay(self, attempt: int, error: NylasError, jitter: float) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up."""
        if isinstance(error, NylasRateLimited) and error.retry_after is not None:
            if error.retry_after > self.max_retry_after:
                return None
            return error.retry_after
        backoff = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        if isinstance(error, NylasRateLimited):
            backoff = max(backoff, 2 * self.rate_limit_floor)
        return backoff / 2 + backoff / 2 * jitter  # "equal jitter": spread workers apart


def is_retryable(error: NylasError) -> bool:
    return isinstance(error, NylasRateLimited | NylasUnavailable)
