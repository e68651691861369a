"""`reauth demo`'s banner, the emulator's index page and /dev/mail's plugin and address filter."""

from __future__ import annotations

from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import requests
from admin_support import add_account
from conftest import upgraded

from portal.demo import DEMO_ADMIN_EMAIL, DEMO_ADMIN_PASSWORD, DemoOptions, banner, demo_app
from portal.demo.data import DEMO_PASSWORD
from portal.views.devmail import NOTES_EXTENSION

INVITED = {
    "ada@contoso.com": "microsoft-graph",
    "alan@fabrikam.com": "ews-password",
    "edith@fabrikam.com": "ews-password",
}


def write_invitation(folder: Path, number: int, recipient: str) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "no-reply@x.example", recipient, "Sign in"
    message.set_content("Please sign in again.")
    (folder / f"outbox-{number}.eml").write_bytes(message.as_bytes(policy=default))


def mailbox_app(make_app, tmp_path: Path):
    folder = tmp_path / "mail"
    folder.mkdir()
    app = upgraded(make_app(DEMO=True, MAIL_BACKEND="file", MAIL_FILE_DIR=str(folder)))
    for number, (email, plugin) in enumerate(INVITED.items(), start=1):
        add_account(app, f"v2-{number}", email=email, plugin=plugin)
        write_invitation(folder, number, f"Someone <{email}>")
    app.extensions[NOTES_EXTENSION] = {"ews-password": f"Exchange password: {DEMO_PASSWORD}"}
    return app


def listed(page: str) -> set[str]:
    return {email for email in INVITED if f"&lt;{email}&gt;" in page}


def test_dev_mail_filters_by_plugin_and_address(make_app, tmp_path: Path) -> None:
    client = mailbox_app(make_app, tmp_path).test_client()

    everything = client.get("/dev/mail/").get_data(as_text=True)
    assert listed(everything) == set(INVITED)
    assert 'name="plugin"' in everything and 'name="address"' in everything

    exchange = client.get("/dev/mail/?plugin=ews-password").get_data(as_text=True)
    assert listed(exchange) == {"alan@fabrikam.com", "edith@fabrikam.com"}
    assert f"Exchange password: {DEMO_PASSWORD}" in exchange

    by_address = client.get("/dev/mail/?address=ALAN").get_data(as_text=True)
    assert listed(by_address) == {"alan@fabrikam.com"}
    both = client.get("/dev/mail/?plugin=microsoft-graph&address=fabrikam").get_data(as_text=True)
    assert listed(both) == set()
    assert "No email matches." in both


def test_demo_banner_prints_the_urls_a_person_wants(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("REAUTH_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("REAUTH_ENV", "testing")  # leaves logging to pytest
    options = DemoOptions("127.0.0.1", 5000, 5050)
    app = demo_app(options)
    text = "\n".join(banner(app, options))
    assert "http://127.0.0.1:5000/dev/mail/" in text
    assert (
        f"http://127.0.0.1:5000/admin/login   ({DEMO_ADMIN_EMAIL} / {DEMO_ADMIN_PASSWORD})" in text
    )
    assert f"?plugin=ews-password   (fabrikam.com accounts; password: {DEMO_PASSWORD})" in text
    assert "/healthz" not in text
    assert app.extensions[NOTES_EXTENSION]["ews-password"].endswith(DEMO_PASSWORD)


def test_the_emulator_root_is_an_index_page(nylas_emulator) -> None:
    response = requests.get(f"{nylas_emulator.url}/", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Nylas v3 emulator" in response.text
    assert 'href="/_emulator/requests"' in response.text
    assert nylas_emulator.api_key not in response.text
    assert requests.get(f"{nylas_emulator.url}/_emulator/requests", timeout=10).ok
