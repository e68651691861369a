"""Grants API: list with offset paging and filters, get, patch, delete (docs/nylas.md)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, request

from portal.testing.emulator.errors import EmulatorError, new_request_id
from portal.testing.emulator.replies import current_state, data_reply, json_body, list_reply
from portal.testing.emulator.replies import not_found as not_found_error
from portal.testing.emulator.state import ALIAS_PROVIDERS, now

blueprint = Blueprint("emulator_grants", __name__)
EXACT_FILTERS = ("provider", "grant_status", "ip", "account_id", "workspace_id")


def public_grant(grant: dict[str, Any], with_aliases: bool = False) -> dict[str, Any]:
    """Return the grant as Nylas serves it (no None values, copies of nested objects).

    `email_aliases` only when asked (`expose_aliases=true`) and for the providers Nylas lists
    them for."""
    shown = {key: value for key, value in grant.items() if value is not None}
    aliases = shown.pop("email_aliases", None) or []
    if with_aliases and grant.get("provider") in ALIAS_PROVIDERS:
        shown["email_aliases"] = list(aliases)
    return shown


def resolve_grant(grant_ref: str) -> dict[str, Any]:
    """Find a grant by id, `grant:<id>`, `<email>` or `email:<email>` (SPEC grant id patterns)."""
    state = current_state()
    if grant_ref.startswith("email:") or "@" in grant_ref:
        found = state.find_grant_by_email(grant_ref.removeprefix("email:"))
    else:
        found = state.grants.get(grant_ref.removeprefix("grant:"))
    if found is None:
        raise not_found_error("grant")
    return found


def matches(grant: dict[str, Any], args: Any) -> bool:
    """Apply the list filters of `GET /v3/grants` to one grant."""
    for name in EXACT_FILTERS:
        if name in args and str(grant.get(name)) != args[name]:
            return False
    if "email" in args and str(grant.get("email", "")).lower() != args["email"].lower():
        return False
    if "account_ids" in args:
        wanted = {item.strip() for item in args["account_ids"].split(",") if item.strip()}
        if grant.get("account_id") not in wanted:
            return False
    if "since" in args and int(grant["created_at"]) < int(args["since"]):
        return False
    return not ("before" in args and int(grant["created_at"]) >= int(args["before"]))


def sorted_grants(grants: list[dict[str, Any]], args: Any) -> list[dict[str, Any]]:
    """Order by `sort_by` (created_at|updated_at) and `order_by` (desc default|asc)."""
    key = args.get("sort_by") or args.get("sortBy") or "created_at"
    if key not in {"created_at", "updated_at"}:
        raise EmulatorError(
            400, "invalid_request_error", "sort_by must be created_at or updated_at"
        )
    descending = (args.get("order_by") or args.get("orderBy") or "desc").lower() != "asc"
    # Insertion order breaks ties so that paging over equal timestamps stays stable.
    indexed = list(enumerate(grants))
    indexed.sort(key=lambda pair: (int(pair[1].get(key) or 0), pair[0]), reverse=descending)
    return [grant for _, grant in indexed]


@blueprint.get("/v3/grants")
def list_grants() -> Response:
    """List the application's grants, one offset page at a time."""
    args = request.args.to_dict()
    if "grantStatus" in args:
        args.setdefault("grant_status", args["grantStatus"])
    try:
        with current_state().lock:
            found = [public_grant(g) for g in current_state().grants.values() if matches(g, args)]
    except ValueError:
        raise EmulatorError(400, "invalid_request_error", "since/before must be integers") from None
    return list_reply(sorted_grants(found, args))


@blueprint.get("/v3/grants/<grant_ref>")
def get_grant(grant_ref: str) -> Response:
    """Return one grant, with its aliases when `expose_aliases=true`."""
    expose = request.args.get("expose_aliases", "false").lower()
    if expose not in ("true", "false"):
        raise EmulatorError(400, "invalid_request_error", "expose_aliases must be true or false")
    return data_reply(public_grant(resolve_grant(grant_ref), with_aliases=expose == "true"))


@blueprint.patch("/v3/grants/<grant_ref>")
def update_grant(grant_ref: str) -> Response:
    """Replace `settings` and/or `scope`; fires grant.updated (code 25014)."""
    body = json_body()
    state = current_state()
    with state.lock:
        grant = resolve_grant(grant_ref)
        if "settings" in body:
            if not isinstance(body["settings"], dict):
                raise EmulatorError(400, "invalid_request_error", "settings must be an object")
            grant["settings"] = dict(body["settings"])
        if "scope" in body:
            if not isinstance(body["scope"], list):
                raise EmulatorError(400, "invalid_request_error", "scope must be a list")
            grant["scope"] = [str(item) for item in body["scope"]]
        grant["updated_at"] = now()
        snapshot = dict(grant)
    state.dispatcher.emit("grant.updated", snapshot)
    return data_reply(public_grant(snapshot))


@blueprint.delete("/v3/grants/<grant_ref>")
def delete_grant(grant_ref: str) -> Response:
    """Delete a grant for good; a later sign-in of the same mailbox makes a new grant id."""
    state = current_state()
    with state.lock:
        grant_id = resolve_grant(grant_ref)["id"]
        state.delete_grant(grant_id)
    return jsonify({"request_id": new_request_id()})
