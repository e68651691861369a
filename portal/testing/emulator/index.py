"""`GET /`: a small page saying what the emulator is, for a person who opens its root URL."""

from __future__ import annotations

from flask import Blueprint, Response
from markupsafe import escape

from portal.testing.emulator.replies import current_state

blueprint = Blueprint("emulator_index", __name__)

# Inline and static: the page names no secret (not the API key) and needs no template.
INDEX_PAGE = """<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Nylas v3 emulator (reauth-portal)</title>
<meta name="viewport" content="width=device-width, initial-scale=1"></head>
<body style="font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem">
<h1>Nylas v3 emulator</h1>
<p>A local stand-in for the Nylas v3 API, built into reauth-portal for tests, development and
<code>reauth demo</code>. Nothing here talks to Nylas or to Microsoft.</p>
<p>It holds {grants} grant(s). The portal sends people to its hosted sign-in page
(<code>/v3/connect/auth</code>) from an invitation link; open one from the portal's demo
mailbox rather than this page.</p>
<ul>
<li><a href="/_emulator/requests">/_emulator/requests</a>: the API calls it has answered
(secrets redacted), as JSON</li>
<li><a href="/_emulator/deliveries">/_emulator/deliveries</a>: the webhooks it has sent</li>
<li><a href="/_emulator/consents">/_emulator/consents</a>: administrator consents given</li>
<li>The API itself is under <code>/v3/</code> and needs the portal's API key.</li>
</ul>
<p>Reference: docs/nylas.md in reauth-portal.</p>
</body>
</html>
"""


@blueprint.get("/")
def index() -> Response:
    grants = len(current_state().grants)
    return Response(INDEX_PAGE.format(grants=escape(str(grants))), mimetype="text/html")
