"""The OpenAPI 3 description of /api/v1, kept beside the code it describes.

tests/test_api_schema.py runs schemathesis against this document and the live app, so a
response that drifts from it fails the suite.
"""

from __future__ import annotations

from typing import Any

from portal.admin.listing import CURSOR_PATTERN, MAX_PAGE_SIZE, PAGE_SIZE
from portal.models import AccountStatus

NULLABLE_STRING = {"type": ["string", "null"]}
TIMESTAMP = {"type": ["string", "null"], "format": "date-time"}
COUNTS = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}

ACCOUNT = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "account_id",
        "email",
        "name",
        "external_id",
        "category",
        "plugin",
        "status",
        "status_reason",
        "tenant",
        "grant_id",
        "outcome",
        "invited_at",
        "sent_at",
        "opened_at",
        "completed_at",
        "completed_via",
    ],
    "properties": {
        "account_id": {"type": "string", "description": "the v2 account id (ledger key)"},
        "email": {"type": "string"},
        "name": NULLABLE_STRING,
        "external_id": NULLABLE_STRING,
        "category": {"type": "string"},
        "plugin": NULLABLE_STRING,
        "status": {"type": "string", "enum": [s.value for s in AccountStatus]},
        "status_reason": NULLABLE_STRING,
        "tenant": NULLABLE_STRING,
        "grant_id": {**NULLABLE_STRING, "description": "the v3 grant id"},
        "outcome": {"type": ["string", "null"], "enum": ["updated", "new", None]},
        "invited_at": TIMESTAMP,
        "sent_at": TIMESTAMP,
        "opened_at": TIMESTAMP,
        "completed_at": TIMESTAMP,
        "completed_via": NULLABLE_STRING,
    },
}

STATS = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "total",
        "by_category",
        "by_plugin",
        "by_status",
        "needs_reauth",
        "completed",
        "completion_rate",
    ],
    "properties": {
        "total": {"type": "integer", "minimum": 0},
        "by_category": COUNTS,
        "by_plugin": COUNTS,
        "by_status": COUNTS,
        "needs_reauth": {"type": "integer", "minimum": 0},
        "completed": {"type": "integer", "minimum": 0},
        "completion_rate": {"type": "number", "minimum": 0, "maximum": 1},
    },
}

# Every error under /api/ (portal.api.error_response), routing's 404 and 405 included.
ERROR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["error", "message"],
    "properties": {
        "error": {
            "type": "string",
            "pattern": "^[a-z0-9_]+$",
            "description": "machine-readable code: unauthorized, bad_request, not_found, "
            "method_not_allowed, too_many_requests, internal_error, ...",
        },
        "message": {"type": "string", "description": "what went wrong, for a person"},
    },
}


def json_response(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str) -> dict[str, Any]:
    return json_response(description, {"$ref": "#/components/schemas/Error"})


def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "schema": schema,
        "description": description,
    }


LIST_PARAMETERS = [
    query(
        "q",
        {"type": "string"},
        "any part of an email, name or v2 account id, in any case (3 characters or more), or an "
        "exact grant id; 1 or 2 characters match the start of an email or an exact id",
    ),
    query("status", {"type": "string", "enum": [s.value for s in AccountStatus]}, "state"),
    query("category", {"type": "string"}, "classification category"),
    query("plugin", {"type": "string"}, "plugin name; `none` for accounts without one"),
    query("tenant", {"type": "string"}, "Azure tenant id or domain, in any case"),
    query(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": PAGE_SIZE},
        "page size",
    ),
    query(
        "cursor",
        {"type": "string", "pattern": f"^{CURSOR_PATTERN.pattern}$"},
        "`next_cursor` of the previous page (opaque)",
    ),
]
COMMON_ERRORS = {"401": error("missing, unknown or revoked bearer token")}


def openapi_document() -> dict[str, Any]:
    """The document served at /api/v1/openapi.json."""
    page = {
        "type": "object",
        "additionalProperties": False,
        "required": ["data", "next_cursor"],
        "properties": {
            "data": {"type": "array", "items": {"$ref": "#/components/schemas/Account"}},
            "next_cursor": {"type": ["string", "null"]},
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "reauth-portal API",
            "version": "1",
            "description": "The migration ledger: v2 account id -> v3 grant id, and stats. "
            "Every error, an unknown path or method included, answers the `Error` schema.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/accounts": {
                "get": {
                    "operationId": "listAccounts",
                    "summary": "Accounts, filtered, in keyset pages",
                    "parameters": LIST_PARAMETERS,
                    "responses": {
                        "200": json_response("a page of accounts", page),
                        "400": error("bad limit or cursor"),
                        **COMMON_ERRORS,
                    },
                }
            },
            "/accounts/{account_id}": {
                "get": {
                    "operationId": "getAccount",
                    "summary": "One account by its v2 account id",
                    "parameters": [
                        {
                            "name": "account_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "minLength": 1},
                        }
                    ],
                    "responses": {
                        "200": json_response(
                            "the account", {"$ref": "#/components/schemas/Account"}
                        ),
                        "404": error("no such account"),
                        **COMMON_ERRORS,
                    },
                }
            },
            "/stats": {
                "get": {
                    "operationId": "getStats",
                    "summary": "Same object as `reauth accounts stats --json`",
                    "responses": {
                        "200": json_response(
                            "counts and completion rate", {"$ref": "#/components/schemas/Stats"}
                        ),
                        **COMMON_ERRORS,
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document",
                    "responses": {
                        "200": json_response("OpenAPI 3.1 document", {"type": "object"}),
                        **COMMON_ERRORS,
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from `reauth api-token create`",
                }
            },
            "schemas": {"Account": ACCOUNT, "Stats": STATS, "Error": ERROR},
        },
    }
