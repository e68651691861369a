"""A tiny OpenID Connect issuer for tests and demos: discovery, JWKS, authorize, token.

It signs ID tokens with RS256 and a key generated at start, and approves whoever `user` names
without asking (the test decides who "signs in"). Serve it over real HTTP:

>>> issuer = LocalIssuer(client_id="portal", client_secret="s3cret")  # doctest: +SKIP
>>> with ThreadedServer(issuer.build) as server:  # doctest: +SKIP
...     issuer.user = {"sub": "u1", "email": "ops@example.com"}
...     app = create_app({"OIDC_ISSUER": server.url, ...})
"""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlencode

from flask import Flask, Response, jsonify, redirect, request
from joserfc import jwt
from joserfc.jwk import RSAKey


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    nonce: str | None
    user: dict[str, Any]


@dataclass
class LocalIssuer:
    client_id: str = "reauth-portal"
    client_secret: str = "local-issuer-secret"  # noqa: S105 - a fixture's, not a real secret
    user: dict[str, Any] = field(
        default_factory=lambda: {"sub": "user-1", "email": "a@example.com"}
    )
    url: str = ""
    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, parameters={"kid": "k1"}))
    codes: dict[str, Grant] = field(default_factory=dict)

    def build(self, url: str) -> Flask:
        """The issuer's WSGI app, knowing its own URL (ThreadedServer's build callback)."""
        self.url = url
        app = Flask("local_oidc_issuer")
        app.add_url_rule("/.well-known/openid-configuration", view_func=self.discovery)
        app.add_url_rule("/jwks", view_func=self.jwks)
        app.add_url_rule("/authorize", view_func=self.authorize)
        app.add_url_rule("/token", view_func=self.token, methods=["POST"])
        return app

    def discovery(self) -> Response:
        return jsonify(
            issuer=self.url,
            authorization_endpoint=f"{self.url}/authorize",
            token_endpoint=f"{self.url}/token",
            jwks_uri=f"{self.url}/jwks",
            response_types_supported=["code"],
            subject_types_supported=["public"],
            id_token_signing_alg_values_supported=["RS256"],
            token_endpoint_auth_methods_supported=["client_secret_basic", "client_secret_post"],
            scopes_supported=["openid", "email", "profile"],
        )

    def jwks(self) -> Response:
        return jsonify(keys=[self.key.as_dict(private=False)])

    def authorize(self) -> Any:
        """Approve `user` at once and send the browser back with a one-time code."""
        args = request.args
        if args.get("client_id") != self.client_id or args.get("response_type") != "code":
            return jsonify(error="invalid_request"), 400
        code = secrets.token_urlsafe(16)
        self.codes[code] = Grant(
            self.client_id, args.get("redirect_uri", ""), args.get("nonce"), dict(self.user)
        )
        query = urlencode({"code": code, "state": args.get("state", "")})
        return redirect(f"{args.get('redirect_uri')}?{query}", 302)

    def token(self) -> Any:
        """Exchange a code (single use) for an access token and a signed ID token."""
        client_id, client_secret = self.client_credentials()
        if (client_id, client_secret) != (self.client_id, self.client_secret):
            return jsonify(error="invalid_client"), 401
        grant = self.codes.pop(request.form.get("code", ""), None)
        if grant is None or grant.redirect_uri != request.form.get("redirect_uri"):
            return jsonify(error="invalid_grant"), 400
        return jsonify(
            access_token=secrets.token_urlsafe(16),
            token_type="Bearer",  # noqa: S106
            expires_in=3600,
            id_token=self.id_token(grant),
        )

    def client_credentials(self) -> tuple[str, str]:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            decoded = base64.b64decode(header[6:]).decode()
            client_id, _, client_secret = decoded.partition(":")
            return unquote(client_id), unquote(client_secret)
        return request.form.get("client_id", ""), request.form.get("client_secret", "")

    def id_token(self, grant: Grant) -> str:
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": grant.client_id,
            "iat": now,
            "exp": now + 300,
            **grant.user,
        }
        if grant.nonce:
            claims["nonce"] = grant.nonce
        return jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.key)
