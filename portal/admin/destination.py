"""The dashboard's line about the portal's Nylas webhook destination, without slowing it down.

Nylas is asked at most once a CACHE_SECONDS per process, with a short timeout and no retry,
and an error is remembered like an answer: a slow or unreachable Nylas costs one page view a
few seconds per minute at worst, and the page always renders ("unknown: Nylas could not be
asked"). The cache is a copy of what Nylas says, not state another process needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Flask

from portal.nylas import NylasGateway, RetryPolicy
from portal.nylas.destination import DestinationStatus, destination_status, portal_webhook_url
from portal.settings import Settings

CACHE_SECONDS = 60.0
PROBE_TIMEOUT = 3.0
EXTENSION_KEY = "reauth_destination_status"


@dataclass
class StatusCache:
    """One process's latest answer, and the gateway that asks (one attempt, short timeout)."""

    gateway: NylasGateway
    lock: threading.Lock
    value: DestinationStatus | None = None
    asked_at: float = 0.0


def cache_of(app: Flask, settings: Settings) -> StatusCache:
    cache = app.extensions.get(EXTENSION_KEY)
    if cache is None:
        gateway = NylasGateway(
            api_key=settings.nylas_api_key,
            client_id=settings.nylas_client_id,
            api_uri=settings.nylas_api_uri,
            timeout=min(PROBE_TIMEOUT, settings.nylas_timeout or PROBE_TIMEOUT),
            retry=RetryPolicy(max_attempts=1),
        )
        cache = app.extensions[EXTENSION_KEY] = StatusCache(gateway, threading.Lock())
    assert isinstance(cache, StatusCache)
    return cache


def dashboard_destination(
    app: Flask, settings: Settings, clock: Callable[[], float] = time.monotonic
) -> DestinationStatus:
    """The destination's status as of at most CACHE_SECONDS ago; never raises for Nylas."""
    cache = cache_of(app, settings)
    if cache.value is not None and clock() - cache.asked_at < CACHE_SECONDS:
        return cache.value
    # One request asks; the others meanwhile show the previous answer rather than wait.
    if not cache.lock.acquire(blocking=cache.value is None):
        assert cache.value is not None
        return cache.value
    try:
        if cache.value is None or clock() - cache.asked_at >= CACHE_SECONDS:
            cache.value = destination_status(cache.gateway, portal_webhook_url(settings.base_url))
            cache.asked_at = clock()
        return cache.value
    finally:
        cache.lock.release()
