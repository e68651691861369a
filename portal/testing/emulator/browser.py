"""Play the user's browser on the emulator's hosted sign-in pages (for tests and demos).

params = complete_hosted_auth(auth_url, email="ada@contoso.com")
params["code"], params["state"]
"""

from __future__ import annotations

from html.parser import HTMLParser
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests


class FormFinder(HTMLParser):
    """Collect the first form's action, its prefilled text fields and an error banner."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self.error: str | None = None
        self._in_error = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = values.get("action")
        if tag == "input" and values.get("type") in {"email", "text", "hidden"}:
            # A browser submits what the page prefilled, e.g. the login_hint address.
            self.fields[values.get("name") or ""] = values.get("value") or ""
        self._in_error = tag == "p" and values.get("class") == "error"

    def handle_data(self, data: str) -> None:
        if self._in_error and data.strip():
            self.error = data.strip()
            self._in_error = False


class SignInPageError(Exception):
    """The sign-in page was shown again with an error (e.g. a wrong Exchange password)."""


def complete_hosted_auth(
    auth_url: str,
    *,
    email: str | None = None,
    action: str = "accept",
    scenario: str = "normal",
    other_email: str | None = None,
    password: str | None = None,
    server: str | None = None,
    tenant: str | None = None,
    imap_host: str | None = None,
    imap_port: int | None = None,
    imap_username: str | None = None,
    timeout: float = 10.0,
) -> dict[str, str]:
    """Open the hosted-auth URL, submit the sign-in form, return the redirect's query params.

    `tenant` is what an administrator types on the admin-consent page; `imap_*` and
    `password` fill the IMAP (password provider) form."""
    page = requests.get(auth_url, timeout=timeout)
    page.raise_for_status()
    finder = FormFinder()
    finder.feed(page.text)
    if finder.action is None:
        raise SignInPageError("the hosted-auth page has no sign-in form")
    form = dict(finder.fields, action=action, scenario=scenario)
    optional = {
        "email": email,
        "other_email": other_email,
        "password": password,
        "server": server,
        "tenant": tenant,
        "imap_host": imap_host,
        "imap_port": None if imap_port is None else str(imap_port),
        "imap_username": imap_username,
    }
    form.update({key: value for key, value in optional.items() if value is not None})
    answer = requests.post(
        urljoin(auth_url, finder.action), data=form, allow_redirects=False, timeout=timeout
    )
    if answer.status_code not in (302, 303):
        shown = FormFinder()
        shown.feed(answer.text)
        raise SignInPageError(shown.error or f"sign-in answered HTTP {answer.status_code}")
    return dict(parse_qsl(urlsplit(answer.headers["Location"]).query))
