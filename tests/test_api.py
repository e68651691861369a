"""The API for the company's app: bearer tokens, filters, keyset cursors, stats, OpenAPI, errors."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import schemathesis
from admin_support import add_account, make_token
from flask import Flask
from hypothesis import HealthCheck, given, settings

from portal.accounts.ledger import account_stats
from portal.api.openapi import ERROR as ERROR_SCHEMA
from portal.db import db
from portal.models import ApiToken, utcnow


@pytest.fixture
def api_app(db_app: Flask) -> Flask:
    for n in range(7):
        add_account(
            db_app,
            f"v2-{n}",
            status="completed" if n % 2 else "invited",
            grant_id=f"grant-{n}",
            plugin=None if n == 6 else "microsoft-graph",
            tenant="fabrikam.example" if n > 4 else "contoso.example",
            outcome="updated" if n % 2 else None,
            completed_at=utcnow() if n % 2 else None,
        )
    return db_app


@pytest.fixture
def token(api_app: Flask) -> str:
    return make_token(api_app)


def get(app: Flask, path: str, token: str | None, **params: str) -> object:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return app.test_client().get(path, headers=headers, query_string=params)


def test_tokens_are_checked_by_digest_and_revocation(api_app, token):
    assert get(api_app, "/api/v1/stats", None).status_code == 401
    refused = get(api_app, "/api/v1/stats", "made-up-token")
    assert refused.status_code == 401 and refused.get_json()["error"] == "unauthorized"
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert get(api_app, "/api/v1/stats", token).status_code == 200
    with api_app.app_context(), db.transaction() as session:
        for row in session.query(ApiToken).all():
            assert token not in row.token_digest
            row.revoked_at = utcnow()
    assert get(api_app, "/api/v1/stats", token).status_code == 401


def test_stats_is_the_cli_shape(api_app, token, db_runner):
    response = get(api_app, "/api/v1/stats", token)
    cli = db_runner.invoke(args=["accounts", "stats", "--json"])
    assert cli.exit_code == 0, cli.output
    assert response.get_json() == json.loads(cli.output)
    with api_app.app_context():
        assert response.get_json() == account_stats(db.session)


def test_accounts_filters_and_keyset_paging(api_app, token):
    seen, cursor = [], None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        body = get(api_app, "/api/v1/accounts", token, **params).get_json()
        seen += [row["account_id"] for row in body["data"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"v2-{n}" for n in range(7)]
    done = get(api_app, "/api/v1/accounts", token, status="completed").get_json()["data"]
    assert {row["account_id"] for row in done} == {"v2-1", "v2-3", "v2-5"}
    tenant = get(api_app, "/api/v1/accounts", token, tenant="fabrikam.example").get_json()
    assert [row["account_id"] for row in tenant["data"]] == ["v2-5", "v2-6"]
    orphans = get(api_app, "/api/v1/accounts", token, plugin="none").get_json()["data"]
    assert [row["account_id"] for row in orphans] == ["v2-6"]
    by_grant = get(api_app, "/api/v1/accounts", token, q="grant-4").get_json()["data"]
    assert [row["account_id"] for row in by_grant] == ["v2-4"]


def test_bad_cursor_and_limit_are_json_400s(api_app, token):
    for params in (
        {"cursor": "nonsense!"},
        {"cursor": "abc"},
        {"limit": "0"},
        {"limit": "x"},
        {"limit": "501"},
    ):
        response = get(api_app, "/api/v1/accounts", token, **params)
        assert response.status_code == 400, params
        assert response.get_json()["error"] == "bad_request"


def test_one_account_by_v2_id(api_app, token):
    body = get(api_app, "/api/v1/accounts/v2-1", token).get_json()
    assert body["grant_id"] == "grant-1" and body["outcome"] == "updated"
    assert body["completed_at"].endswith("Z")
    missing = get(api_app, "/api/v1/accounts/v2-404", token)
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"


def test_api_conforms_to_its_openapi_document(api_app, token):
    """Schemathesis, in process against the WSGI app: no 500s, responses as documented.

    Cases come from each operation's Hypothesis strategy (schemathesis' pytest fixture loader
    does not run under pytest 9), bounded in examples so the suite stays quick.
    """
    auth = {"Authorization": f"Bearer {token}"}
    api_schema = schemathesis.openapi.from_wsgi("/api/v1/openapi.json", api_app, headers=auth)
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 3  # schemathesis leaves out the document itself
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def conforms(case):
            case.call_and_validate(headers=auth)

        conforms()


# -- one error shape under /api/ ---------------------------------------------------------------


def assert_api_error(response: Any, status: int, code: str) -> None:
    """The `Error` schema of the OpenAPI document: exactly a code and a message, as JSON."""
    assert response.status_code == status, response.data[:200]
    assert response.is_json, response.content_type
    body = response.get_json()
    assert set(body) == set(ERROR_SCHEMA["required"]) == set(ERROR_SCHEMA["properties"])
    assert body["error"] == code and isinstance(body["message"], str) and body["message"]
    assert re.fullmatch(ERROR_SCHEMA["properties"]["error"]["pattern"], body["error"])


def test_unknown_api_paths_answer_the_api_error_shape(app: Flask) -> None:
    client = app.test_client()
    for path in ("/api/v1/no-such-thing", "/api/v1/stats/more", "/api/", "/api/v2/stats"):
        assert_api_error(client.get(path), 404, "not_found")
    # A token changes nothing: routing answers before the API looks at it.
    answer = client.get("/api/v1/nothing-here", headers={"Authorization": "Bearer made-up"})
    assert_api_error(answer, 404, "not_found")


def test_a_wrong_method_answers_the_api_error_shape_with_allow(app: Flask) -> None:
    client = app.test_client()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        answer = client.open("/api/v1/stats", method=method)
        assert_api_error(answer, 405, "method_not_allowed")
        assert set(answer.headers["Allow"].replace(" ", "").split(",")) >= {"GET", "HEAD"}


def test_an_unexpected_failure_under_api_answers_the_shape(
    make_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(PROPAGATE_EXCEPTIONS=False)

    def broken() -> str:
        raise RuntimeError("boom")

    app.add_url_rule("/api/v1/broken", view_func=broken)
    assert_api_error(app.test_client().get("/api/v1/broken"), 500, "internal_error")
    assert "boom" not in app.test_client().get("/api/v1/broken").text
    assert "unexpected API error" in caplog.text


def test_the_openapi_document_declares_the_error_schema(api_app: Flask, token: str) -> None:
    document = get(api_app, "/api/v1/openapi.json", token).get_json()
    assert document["components"]["schemas"]["Error"] == ERROR_SCHEMA
    error_ref = {"$ref": "#/components/schemas/Error"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            statuses = set(operation["responses"])
            assert {"401"} <= statuses, (path, method)
            for status, response in operation["responses"].items():
                if not status.startswith("2"):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == error_ref, (path, method, status)


def test_pages_outside_the_api_keep_their_html_error_pages(app: Flask) -> None:
    client = app.test_client()
    missing = client.get("/no-such-page")
    assert missing.status_code == 404 and missing.content_type.startswith("text/html")
    assert "<html" in missing.text.lower() and not missing.is_json
    wrong_method = client.delete("/healthz")
    assert wrong_method.status_code == 405 and wrong_method.content_type.startswith("text/html")
    assert "GET" in wrong_method.headers["Allow"]
    # The webhook paths keep their own JSON shape.
    webhook = client.get("/webhooks/no-such-thing")
    assert webhook.status_code == 404 and webhook.get_json()["error"]["status"] == 404
