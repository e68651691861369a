"""The Flask class of the portal: URLs it builds name REAUTH_BASE_URL, never the Host header."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Request
from werkzeug.routing import MapAdapter

from portal.extensions import settings_of


class BaseUrlFlask(Flask):
    """Flask whose URL map is bound to the configured public origin.

    Werkzeug builds the Location of its routing redirects (`/admin` -> `/admin/`, merged double
    slashes, any RequestRedirect) and `url_for(..., _external=True)` from the adapter's scheme
    and server name, which it takes from the request: the Host header a client chose (and, behind
    ProxyFix, X-Forwarded-Proto). Binding both to REAUTH_BASE_URL keeps every built URL on the
    portal's own origin whatever the request claims. Routing itself never looks at the host
    (no subdomain or host matching), so requests are matched as before.
    """

    def create_url_adapter(self, request: Request | None) -> MapAdapter | None:
        adapter = super().create_url_adapter(request)
        if request is not None and adapter is not None:
            origin = urlsplit(settings_of(self).base_url)
            adapter.url_scheme = origin.scheme
            adapter.server_name = origin.netloc
        return adapter
