"""A token bucket: the emulator's stand-in for a Nylas rate limit on one endpoint.

Nylas publishes no number for `POST /v3/connect/custom`; tests and the benchmark set one
(`custom_auth_rate`) to see what the portal does when it is reached (docs/nylas.md).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable


class TokenBucket:
    """Admit `rate` requests per second on average, with a burst of one second's worth.

    The caller holds no lock: the bucket has its own, so a 429 storm does not serialise the
    emulator's other endpoints.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0 requests per second")
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Spend one token: 0.0 when admitted, else the seconds until one is available."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


def retry_after_seconds(wait: float) -> int:
    """The whole seconds a client should wait (Retry-After takes integers; never 0)."""
    return max(1, math.ceil(wait))
