"""What the sign-in journey's steps share: the settings, the enabled plugins and Nylas.

One small object instead of the same three arguments on every function; the transaction and
the clock still travel on their own, since they change from call to call.
"""

from __future__ import annotations

from dataclasses import dataclass

from portal.extensions import current_settings
from portal.nylas import NylasGateway
from portal.nylas.gateway import current_gateway
from portal.plugins import PluginRegistry, plugin_registry
from portal.settings import Settings


@dataclass(frozen=True)
class Services:
    settings: Settings
    registry: PluginRegistry
    gateway: NylasGateway

    @classmethod
    def standalone(cls, settings: Settings, registry: PluginRegistry) -> Services:
        """For a worker or command, with a gateway of its own built from the settings."""
        return cls(settings, registry, NylasGateway.from_settings(settings))


def current_services() -> Services:
    """The current app's settings, plugins and gateway (an app context must be active)."""
    return Services(current_settings(), plugin_registry(), current_gateway())
