"""Conformance with Nylas' own API reference (docs/nylas.md, "Conformance with Nylas' API reference").

The gateway (portal/nylas/gateway.py) drives the emulator over real HTTP; a WSGI recorder in
front of the emulator keeps every request and answer, and each is validated with openapi-core
against the OpenAPI 3.1 subset of Nylas' published document in ../shared/reference. The
document is read from there, never copied into this repository: without it these tests skip
with the reason, and with REAUTH_REQUIRE_NYLAS_REFERENCE=1 (.ci/run) they fail instead.
REAUTH_NYLAS_OPENAPI names another copy of the file.

Where the document and the SDK (or real Nylas) disagree, DOCUMENT_RELAXATIONS widens the
document in memory, one named place at a time, and says why; docs/nylas.md lists the same cases.
"""

from __future__ import annotations

import copy
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import pytest
import requests
from nylas import Client
from nylas.models.errors import NylasApiError
from openapi_core import Config, OpenAPI
from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest, WerkzeugOpenAPIResponse
from openapi_core.templating.paths.exceptions import PathError
from openapi_core.templating.paths.finders import APICallPathFinder
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from portal.nylas import NylasGateway
from portal.nylas.errors import NylasAuthError, NylasError, NylasNotFound, NylasOAuthError
from portal.nylas.retry import RetryPolicy
from portal.plugins import HostedAuthRequest
from portal.testing.emulator import EmulatorState, complete_hosted_auth
from portal.testing.emulator.app import create_emulator_app
from portal.testing.pytest_plugin import EMULATOR_CALLBACK_URIS, make_emulator_state
from portal.testing.serving import ThreadedServer, WSGIApp

REPO_ROOT = Path(__file__).resolve().parent.parent
REFERENCE = Path("shared/reference/nylas-openapi-v3-subset.json")
REFERENCE_ENV = "REAUTH_NYLAS_OPENAPI"
REQUIRE_ENV = "REAUTH_REQUIRE_NYLAS_REFERENCE"
CALLBACK = EMULATOR_CALLBACK_URIS[0]
GRAPH_SCOPES = ("https://graph.microsoft.com/Mail.Read", "offline_access", "User.Read")


# -- the document ---------------------------------------------------------------------------


def reference_path() -> Path:
    """The document: $REAUTH_NYLAS_OPENAPI, else ../shared/reference/ beside the checkout."""
    override = os.environ.get(REFERENCE_ENV, "").strip()
    return Path(override) if override else REPO_ROOT.parent / REFERENCE


def reference_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "").strip().lower() in {"1", "true", "yes"}


@dataclass(frozen=True)
class Amendment:
    """One change to the in-memory document at a JSON pointer, and the reason for it.

    `value` is the new value, or a function of the old one.
    """

    pointer: str
    value: Any
    reason: str

    def new_value(self, old: Any) -> Any:
        return self.value(old) if callable(self.value) else self.value


def bearer(name: str) -> dict[str, Any]:
    return {name: {"type": "http", "scheme": "bearer"}}


def as_any_of(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": schema["oneOf"]}


# GET /v3/connectors as developer.nylas.com's reference page "List connectors"
# (get_connector_all) describes it: limit/offset paging, an array of connectors, 401.
LIST_CONNECTORS = {
    "operationId": "get_connector_all",
    "parameters": [
        {"in": "query", "name": "limit", "schema": {"type": "integer"}},
        {"in": "query", "name": "offset", "schema": {"type": "integer"}},
    ],
    "responses": {
        "200": {
            "content": {
                "application/json": {
                    "schema": {
                        "properties": {
                            "data": {
                                "items": {"$ref": "#/components/schemas/ConnectorObject"},
                                "type": "array",
                            },
                            "limit": {"type": "integer"},
                            "offset": {"type": "integer"},
                            "request_id": {"type": "string"},
                        },
                        "type": "object",
                    }
                }
            }
        },
        "401": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/401"}}}},
    },
    "security": [{"NYLAS_API_KEY": []}],
}


# What the subset leaves out; each makes the check stricter, none relaxes it.
DOCUMENT_ADDITIONS = (
    Amendment(
        "/components/securitySchemes",
        bearer("NYLAS_API_KEY"),
        "the subset keeps the operations' `security: NYLAS_API_KEY` but not the scheme, and "
        "without it no credentials are checked; Nylas takes the API key as a bearer token",
    ),
    Amendment(
        "/paths/~1v3~1connectors/get",
        LIST_CONNECTORS,
        "the gateway's list_connectors calls GET /v3/connectors, which Nylas' reference "
        "documents (get_connector_all) but the subset leaves out",
    ),
)
# Each relaxes the document at one place for a known difference (docs/nylas.md); each is
# checked to be still needed, so one that the emulator or the SDK no longer needs is dropped.
DOCUMENT_RELAXATIONS = (
    Amendment(
        "/paths/~1v3~1connect~1auth/get/parameters/10/schema/enum",
        ["plain", "S256", "s256"],
        "the SDK's url_for_oauth2_pkce sends code_challenge_method=s256 (lower case) where "
        "the document lists S256; Nylas accepts the SDK's form, so the portal keeps it",
    ),
    Amendment(
        "/paths/~1v3~1connect~1token/post/responses/400/content/application~1json/schema"
        "/properties/error_code/type",
        ["string", "integer"],
        "the document types the token error's error_code as a string, the SDK "
        "(NylasOAuthErrorResponse) as an int; the emulator sends an int, the portal takes either",
    ),
    Amendment(
        "/paths/~1v3~1connectors~1{provider}~1creds/post/requestBody/content/application~1json"
        "/schema",
        as_any_of,
        "the three oneOf branches of a new credential (connector override, service account, "
        "admin consent) are identical in the document, so no body can match exactly one; "
        "anyOf keeps every check the branches make",
    ),
    Amendment(
        "/paths/~1v3~1connect~1custom/post/requestBody/content/application~1json/schema",
        as_any_of,
        "a Microsoft bulk-auth body (provider microsoft, settings email_address and "
        "credential_id) also matches the refresh-token and credential-override branches, "
        "whose settings are open objects with nothing required, so no body matches exactly "
        "one; anyOf keeps every check the branches make",
    ),
    Amendment(
        "/components/schemas/CredentialObject/properties/credential_type",
        {"type": "string"},
        "CredentialObject allows no other properties, yet Nylas answers credential_type "
        "and hashed_data, which the SDK's Credential models",
    ),
    Amendment(
        "/components/schemas/CredentialObject/properties/hashed_data",
        {"type": "string"},
        "as for credential_type",
    ),
)


def pointer_parts(pointer: str) -> list[str]:
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer.split("/")[1:]]


def amend(document: dict[str, Any], amendment: Amendment) -> None:
    """Set the value at the amendment's pointer; every step but the last must exist."""
    *parents, last = pointer_parts(amendment.pointer)
    node: Any = document
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = amendment.new_value(node[int(last)])
    else:
        node[last] = amendment.new_value(node.get(last))


def load_document() -> dict[str, Any]:
    """Read the document or skip (fail under REAUTH_REQUIRE_NYLAS_REFERENCE=1)."""
    path = reference_path()
    if not path.is_file():
        reason = f"Nylas' API reference not found at {path} (set {REFERENCE_ENV} to another copy)"
        if reference_required():
            pytest.fail(f"{reason}; {REQUIRE_ENV}=1")
        pytest.skip(reason)
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return document


def build_openapi(document: dict[str, Any]) -> OpenAPI:
    # The subset has its descriptions removed, which OpenAPI requires on responses, so the
    # document itself is not checked; the schemas in it are what the test is about.
    return OpenAPI.from_dict(document, config=Config(spec_validator_cls=None))


@pytest.fixture(scope="module")
def pristine_document() -> dict[str, Any]:
    return load_document()


def amended(document: dict[str, Any], amendments: Iterable[Amendment]) -> dict[str, Any]:
    changed = copy.deepcopy(document)
    for amendment in amendments:
        amend(changed, amendment)
    return changed


@pytest.fixture(scope="module")
def document(pristine_document: dict[str, Any]) -> dict[str, Any]:
    return amended(pristine_document, DOCUMENT_ADDITIONS + DOCUMENT_RELAXATIONS)


@pytest.fixture(scope="module")
def openapi(document: dict[str, Any]) -> OpenAPI:
    return build_openapi(document)


# -- recording the emulator's traffic ----------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request the emulator received and the answer it gave, as bytes on the wire."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes
    status: int
    response_headers: tuple[tuple[str, str], ...]
    response_body: bytes

    def request(self, base_url: str) -> Request:
        builder = EnvironBuilder(
            method=self.method,
            base_url=base_url,
            path=self.path,
            query_string=self.query,
            headers=list(self.headers),
            data=self.body,
        )
        return Request(builder.get_environ())

    def response(self) -> Response:
        return Response(self.response_body, status=self.status, headers=list(self.response_headers))

    def json(self) -> Any:
        return json.loads(self.response_body)

    def label(self) -> str:
        query = f"?{self.query}" if self.query else ""
        return f"{self.method} {self.path}{query} -> {self.status}"


def request_headers(environ: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """The request's headers from a WSGI environ (CONTENT_TYPE/LENGTH have no HTTP_ prefix)."""
    found = [
        (key[5:].replace("_", "-").title(), str(value))
        for key, value in environ.items()
        if key.startswith("HTTP_")
    ]
    if environ.get("CONTENT_TYPE"):
        found.append(("Content-Type", environ["CONTENT_TYPE"]))
    return tuple(found)


class Recorder:
    """WSGI middleware that keeps every request/answer pair that passes through it."""

    def __init__(self, app: WSGIApp) -> None:
        self.app = app
        self.exchanges: list[Exchange] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        seen: dict[str, Any] = {}

        def keep(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            seen.update(status=int(status.split()[0]), headers=tuple(headers))
            return start_response(status, headers, *args)

        chunks = self.app(environ, keep)
        try:
            answer = b"".join(chunks)
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        self.exchanges.append(
            Exchange(
                method=environ["REQUEST_METHOD"],
                path=environ.get("PATH_INFO", ""),
                query=environ.get("QUERY_STRING", ""),
                headers=request_headers(environ),
                body=body,
                status=seen["status"],
                response_headers=seen["headers"],
                response_body=answer,
            )
        )
        return [answer]


@dataclass
class RecordedEmulator:
    server: ThreadedServer
    state: EmulatorState
    recorder: Recorder

    @property
    def url(self) -> str:
        return self.server.url


@contextmanager
def recorded_emulator() -> Iterator[RecordedEmulator]:
    """An emulator with the fixtures' credentials, served behind a Recorder."""
    state = make_emulator_state()
    recorder = Recorder(create_emulator_app(state))
    with ThreadedServer(lambda _url: recorder) as server:
        yield RecordedEmulator(server, state, recorder)
        state.wait_for_deliveries(timeout=5.0)


@Request.application
def webhook_receiver(request: Request) -> Response:
    """Answer the challenge (echo it) and take every notification."""
    if request.method == "GET":
        return Response(request.args.get("challenge", ""), mimetype="text/plain")
    return Response("", status=200)


# -- what the portal does against Nylas -------------------------------------------------------


def seed(state: EmulatorState) -> None:
    state.seed(
        {
            "connectors": [
                {
                    "provider": "microsoft",
                    "settings": {
                        "client_id": "azure-app",
                        "client_secret": "s",
                        "tenant": "common",
                    },
                    "scope": ["Mail.Read", "offline_access"],
                },
                {"provider": "ews", "scope": ["ews.messages"]},
            ],
            "ews_passwords": {"op@fabrikam.local": "their-password"},
            "ews_domains": ["fabrikam.local"],
        }
    )
    state.add_grant("ada@contoso.com", grant_status="invalid", account_id="v2-ada")
    state.add_mailbox("ada@contoso.com", ["ada.lovelace@contoso.com"])
    state.add_grant("op@fabrikam.local", provider="ews", grant_status="invalid")
    state.add_grant("bob@contoso.com", grant_status="invalid", account_id="v2-bob")


def sign_in(gateway: NylasGateway, request: HostedAuthRequest, **browser: str) -> str:
    """Hosted auth as the journey does it: the gateway's URL, the browser, the exchange."""
    auth = gateway.auth_url(request, state="state-1")
    params = complete_hosted_auth(auth.url, **browser)
    result = gateway.exchange_code(params["code"], auth.code_verifier)
    with pytest.raises(NylasOAuthError):  # a code is single use: the token endpoint's 400
        gateway.exchange_code(params["code"], auth.code_verifier)
    return result.grant_id


def drive_gateway(gateway: NylasGateway, base_url: str, hook_url: str) -> None:
    """Call every gateway method, with the answers Nylas documents for errors among them."""
    credential = gateway.create_credential(
        "microsoft", name="tenant-b", credential_data={"client_id": "b", "client_secret": "x"}
    )
    assert [c.id for c in gateway.list_credentials("microsoft")] == [credential.id]
    assert gateway.get_connector("microsoft").provider == "microsoft"
    assert {c.provider for c in gateway.list_connectors()} == {"microsoft", "ews"}
    gateway.update_connector(
        "microsoft",
        settings={"client_id": "azure-app", "tenant": "common"},
        scope=["Mail.ReadWrite", "offline_access"],
        active_credential_id=credential.id,
    )
    with pytest.raises(NylasNotFound):
        gateway.get_connector("google")
    graph = HostedAuthRequest(
        "microsoft", GRAPH_SCOPES, login_hint="ada@contoso.com", credential_id=credential.id
    )
    grant_id = sign_in(gateway, graph)
    sign_in(
        gateway, HostedAuthRequest("ews", login_hint="op@fabrikam.local"), password="their-password"
    )
    sign_in(gateway, HostedAuthRequest("microsoft", GRAPH_SCOPES, login_hint="new@outlook.com"))
    refused = gateway.auth_url(HostedAuthRequest("microsoft"), redirect_uri=f"{CALLBACK}/elsewhere")
    assert requests.get(refused.url, timeout=10).status_code == 400
    assert gateway.detect_provider("ada@contoso.com").provider == "microsoft"
    assert not gateway.detect_provider("x@unknown.example", all_provider_types=True).detected
    assert len(list(gateway.list_grants(page_size=2))) == 4
    filtered = gateway.list_grants(
        provider="microsoft", grant_status="valid", email="ADA@contoso.com", account_id="v2-ada"
    )
    assert [g.id for g in filtered] == [grant_id]
    assert gateway.get_grant(grant_id).grant_status == "valid"
    with pytest.raises(NylasNotFound):
        gateway.get_grant("no-such-grant")
    assert gateway.grant_aliases(grant_id) == ["ada.lovelace@contoso.com"]
    bulk_auth(gateway, connector_credential=credential.id)
    assert gateway.list_callback_uris() == [CALLBACK]
    hook = gateway.create_webhook(
        hook_url, ["grant.created", "grant.updated"], description="portal"
    )
    assert hook.status == "active"
    assert [w.id for w in gateway.list_webhooks()] == [hook.id]
    assert gateway.rotate_webhook_secret(hook.id).webhook_secret != hook.webhook_secret
    assert gateway.update_webhook(hook.id, description="the portal").description == "the portal"
    assert gateway.update_webhook(hook.id, status="pause").status == "pause"
    assert gateway.update_webhook(hook.id, status="active").status == "active"
    stranger = NylasGateway("wrong-key", gateway.client_id, base_url, redirect_uri=CALLBACK)
    with pytest.raises(NylasAuthError):
        stranger.get_grant(grant_id)


def bulk_auth(gateway: NylasGateway, connector_credential: str) -> None:
    """Microsoft bulk auth: consent through an adminconsent credential, then connect/custom."""
    wrong_type = gateway.admin_consent_url(connector_credential, "state-2")
    assert requests.get(wrong_type, timeout=10).status_code == 400
    consent = gateway.create_credential(
        "microsoft",
        name="app-permissions",
        credential_data={"client_id": "azure-app", "client_secret": "x"},
        credential_type="adminconsent",
    )
    back = complete_hosted_auth(
        gateway.admin_consent_url(consent.id, "state-2"), tenant="contoso.com"
    )
    assert back == {"admin_consent": "true", "tenant": "contoso.com", "state": "state-2"}
    bob = gateway.custom_auth_microsoft("bob@contoso.com", consent.id)
    assert bob.account_id == "v2-bob" and bob.grant_status == "valid"
    with pytest.raises(NylasError) as refused:  # no consent for fabrikam.com's tenant
        gateway.custom_auth_microsoft("eve@fabrikam.com", consent.id)
    assert refused.value.status == 400
    gateway.delete_credential("microsoft", consent.id)


def drive_other_operations(client: Client, state: EmulatorState, hook_url: str) -> None:
    """The documented operations the emulator serves but the gateway does not call (SDK)."""
    grant = state.add_grant("dan@contoso.com")
    client.grants.update(grant["id"], {"scope": ["Mail.Read"], "settings": {"k": "v"}})
    client.grants.destroy(grant["id"])
    credential = state.add_credential("microsoft", "tenant-c")
    client.connectors.credentials.find("microsoft", credential["id"])
    client.connectors.credentials.update("microsoft", credential["id"], {"name": "tenant-d"})
    client.connectors.credentials.destroy("microsoft", credential["id"])
    client.connectors.destroy("ews")
    hook = state.add_webhook(hook_url, ["grant.deleted"])
    client.webhooks.find(hook["id"])
    client.webhooks.update(hook["id"], {"trigger_types": ["grant.expired"]})
    client.webhooks.destroy(hook["id"])
    for missing in (  # the documented 404s of these operations
        lambda: client.grants.update("no-such-grant", {"scope": ["Mail.Read"]}),
        lambda: client.grants.destroy("no-such-grant"),
        lambda: client.connectors.destroy("google"),
    ):
        with pytest.raises(NylasApiError) as caught:
            missing()
        assert caught.value.status_code == 404


@dataclass(frozen=True)
class Conversation:
    base_url: str
    exchanges: tuple[Exchange, ...]


def record(drive: Callable[[RecordedEmulator, str], None]) -> Conversation:
    """Run `drive` against a recorded emulator, with a webhook receiver beside it."""
    with ThreadedServer(lambda _url: webhook_receiver) as receiver, recorded_emulator() as emulator:
        seed(emulator.state)
        drive(emulator, f"{receiver.url}/webhooks/nylas")
        return Conversation(emulator.url, tuple(emulator.recorder.exchanges))


def gateway_for(emulator: RecordedEmulator) -> NylasGateway:
    return NylasGateway(
        emulator.state.api_key,
        emulator.state.client_id,
        emulator.url,
        redirect_uri=CALLBACK,
        retry=RetryPolicy(max_attempts=1),
    )


# Both conversations ask for `openapi` first, so without the document nothing is driven.
@pytest.fixture(scope="module")
def gateway_conversation(openapi: OpenAPI) -> Conversation:
    return record(lambda emulator, hook: drive_gateway(gateway_for(emulator), emulator.url, hook))


@pytest.fixture(scope="module")
def other_conversation(openapi: OpenAPI) -> Conversation:
    def drive(emulator: RecordedEmulator, hook: str) -> None:
        client = Client(emulator.state.api_key, api_uri=emulator.url)
        drive_other_operations(client, emulator.state, hook)

    return record(drive)


# -- checking exchanges against the document ----------------------------------------------------


def is_provider_page(exchange: Exchange) -> bool:
    """The emulator's stand-in for Microsoft's or Exchange's sign-in form: no Nylas API."""
    return exchange.path.startswith("/v3/connect/auth/")


def is_sign_in_page(exchange: Exchange) -> bool:
    """Nylas answers /v3/connect/auth with a 302 to the provider; the emulator shows the page."""
    content_type = dict(exchange.response_headers).get("Content-Type", "")
    return exchange.path == "/v3/connect/auth" and content_type.startswith("text/html")


def api_exchanges(conversation: Conversation) -> list[Exchange]:
    return [e for e in conversation.exchanges if not is_provider_page(e)]


def find_operation(openapi: OpenAPI, base_url: str, exchange: Exchange) -> Any | None:
    """The document's operation for the exchange's method and path, or None."""
    try:
        found = APICallPathFinder(openapi.spec).find(
            exchange.method.lower(), base_url + exchange.path
        )
    except PathError:
        return None
    return found.operation


def operation_id(openapi: OpenAPI, base_url: str, exchange: Exchange) -> str | None:
    operation = find_operation(openapi, base_url, exchange)
    return None if operation is None else str(operation["operationId"])


def describe(error: BaseException) -> str:
    """The error and its causes, with each schema error's place in the body."""
    lines = [f"{type(error).__name__}: {error}"]
    cause = error.__cause__ or error.__context__
    while cause is not None:
        lines.append(f"  {type(cause).__name__}: {cause}")
        for schema_error in getattr(cause, "schema_errors", ()):
            place = "/".join(str(part) for part in schema_error.absolute_path) or "(root)"
            lines.append(f"    at {place}: {schema_error.message}")
        cause = cause.__cause__ or cause.__context__
    return "\n".join(lines)


def undeclared_query(openapi: OpenAPI, base_url: str, exchange: Exchange) -> list[str]:
    """Query parameters the document does not declare for the operation (a typo, say)."""
    operation = find_operation(openapi, base_url, exchange)
    if operation is None:
        return []
    declared = {
        str(parameter["name"])
        for parameter in (operation / "parameters" if "parameters" in operation else [])
        if parameter["in"] == "query"
    }
    sent = {name for name, _ in parse_qsl(exchange.query, keep_blank_values=True)}
    return [f"undeclared query parameter {name!r}" for name in sorted(sent - declared)]


def request_problems(openapi: OpenAPI, base_url: str, exchange: Exchange) -> list[str]:
    request = WerkzeugOpenAPIRequest(exchange.request(base_url))
    problems = [describe(error) for error in openapi.iter_request_errors(request)]
    return problems + undeclared_query(openapi, base_url, exchange)


def response_problems(openapi: OpenAPI, base_url: str, exchange: Exchange) -> list[str]:
    request = WerkzeugOpenAPIRequest(exchange.request(base_url))
    response = WerkzeugOpenAPIResponse(exchange.response())
    return [describe(error) for error in openapi.iter_response_errors(request, response)]


def all_problems(openapi: OpenAPI, conversation: Conversation) -> list[str]:
    """Every request and every answer of the conversation that the document refuses."""
    found = []
    for exchange in api_exchanges(conversation):
        base = conversation.base_url
        for problem in request_problems(openapi, base, exchange):
            found.append(f"request {exchange.label()}\n{problem}")
        if is_sign_in_page(exchange):
            continue
        for problem in response_problems(openapi, base, exchange):
            found.append(f"answer {exchange.label()}\n{problem}")
    return found


GATEWAY_OPERATIONS = {
    "create_credential",
    "get_credential_all",
    "get_connector_by_provider",
    "get_connector_all",
    "update_connector_by_provider",
    "get_oauth2_flow",
    "exchange_oauth2_token",
    "detect_provider_by_email",
    "get-all-grants",
    "get_grant_by_id",
    "get_all_callback_uris",
    "post-webhook-destinations",
    "get-webhook-destinations-application",
    "post-new-secret",
    "put-webhook-by-id",
    "byo_auth",
    "delete_credential_by_id",
}
OTHER_OPERATIONS = {
    "patch_grant_by_id",
    "delete_grant_by_id",
    "get_credential_by_id",
    "patch_credential_by_id",
    "delete_credential_by_id",
    "delete_connector_by_provider",
    "get-webhook-by-id",
    "put-webhook-by-id",
    "delete-webhook-by-id",
}


def unmatched(openapi: OpenAPI, conversation: Conversation) -> list[str]:
    return [
        exchange.label()
        for exchange in api_exchanges(conversation)
        if operation_id(openapi, conversation.base_url, exchange) is None
    ]


def operations_used(openapi: OpenAPI, conversation: Conversation) -> set[str]:
    found = (operation_id(openapi, conversation.base_url, e) for e in api_exchanges(conversation))
    return {name for name in found if name is not None}


def by_operation(
    openapi: OpenAPI, conversation: Conversation, names: Iterable[str]
) -> list[Exchange]:
    wanted = set(names)
    return [
        e
        for e in api_exchanges(conversation)
        if operation_id(openapi, conversation.base_url, e) in wanted
    ]


def report(problems: list[str]) -> str:
    return f"{len(problems)} disagreement(s) with Nylas' API reference:\n\n" + "\n\n".join(problems)


# -- the tests ------------------------------------------------------------------------------------


def test_every_call_of_the_gateway_is_a_documented_operation(
    openapi: OpenAPI, gateway_conversation: Conversation
) -> None:
    assert unmatched(openapi, gateway_conversation) == []
    assert operations_used(openapi, gateway_conversation) == GATEWAY_OPERATIONS


def test_the_gateway_and_the_emulator_conform(
    openapi: OpenAPI, gateway_conversation: Conversation
) -> None:
    problems = all_problems(openapi, gateway_conversation)
    assert not problems, report(problems)


def test_the_other_documented_operations_of_the_emulator_conform(
    openapi: OpenAPI, other_conversation: Conversation
) -> None:
    assert unmatched(openapi, other_conversation) == []
    assert operations_used(openapi, other_conversation) == OTHER_OPERATIONS
    problems = all_problems(openapi, other_conversation)
    assert not problems, report(problems)


def error_answers(openapi: OpenAPI, conversation: Conversation) -> set[tuple[str | None, int]]:
    """(operation, status) of every error answer in the conversation."""
    return {
        (operation_id(openapi, conversation.base_url, e), e.status)
        for e in api_exchanges(conversation)
        if e.status >= 400
    }


def test_error_answers_are_among_those_checked(
    openapi: OpenAPI, gateway_conversation: Conversation
) -> None:
    assert {
        ("exchange_oauth2_token", 400),  # a spent code
        ("get_oauth2_flow", 400),  # a redirect_uri the application does not allow
        ("get_connector_by_provider", 404),
        ("get_grant_by_id", 404),
        ("get_grant_by_id", 401),  # a wrong API key
        ("byo_auth", 400),  # bulk auth for a tenant without consent
    } <= error_answers(openapi, gateway_conversation)


def test_error_answers_of_the_other_operations_are_among_those_checked(
    openapi: OpenAPI, other_conversation: Conversation
) -> None:
    assert error_answers(openapi, other_conversation) == {
        ("patch_grant_by_id", 404),
        ("delete_grant_by_id", 404),
        ("delete_connector_by_provider", 404),
    }


def test_the_hosted_auth_query_the_gateway_builds_is_checked(
    openapi: OpenAPI, gateway_conversation: Conversation
) -> None:
    """Each sign-in's /v3/connect/auth query is validated, parameter by parameter."""
    pages = by_operation(openapi, gateway_conversation, ["get_oauth2_flow"])
    shown = [dict(parse_qsl(e.query)) for e in pages if e.status == 200]
    queries = [q for q in shown if q["response_type"] == "code"]
    assert [q["provider"] for q in queries] == ["microsoft", "ews", "microsoft"]
    assert queries[0]["scope"] == " ".join(GRAPH_SCOPES) and queries[0]["credential_id"]
    assert {q["code_challenge_method"] for q in queries} == {"s256"}
    [consent] = [q for q in shown if q["response_type"] == "adminconsent"]
    assert consent["provider"] == "microsoft" and consent["credential_id"]
    assert "code_challenge" not in consent


def tampered_answer(exchange: Exchange, change: Callable[[Any], None]) -> Exchange:
    body = exchange.json()
    change(body)
    return replace(exchange, response_body=json.dumps(body).encode())


def tampered_request(exchange: Exchange, change: Callable[[Any], None]) -> Exchange:
    body = json.loads(exchange.body)
    change(body)
    return replace(exchange, body=json.dumps(body).encode())


def first(openapi: OpenAPI, conversation: Conversation, name: str, status: int = 200) -> Exchange:
    return next(e for e in by_operation(openapi, conversation, [name]) if e.status == status)


def test_the_check_refuses_a_wrong_answer(
    openapi: OpenAPI, gateway_conversation: Conversation
) -> None:
    base = gateway_conversation.base_url
    grant = first(openapi, gateway_conversation, "get_grant_by_id")
    assert response_problems(openapi, base, grant) == []

    def spoil(body: Any) -> None:
        body["data"]["provider"] = "exchange"
        body["data"]["created_at"] = "yesterday"

    problems = "\n".join(response_problems(openapi, base, tampered_answer(grant, spoil)))
    assert "'exchange' is not one of" in problems
    assert "'yesterday' is not of type 'integer'" in problems
    missing = first(openapi, gateway_conversation, "get_grant_by_id", 404)
    envelope = tampered_answer(missing, lambda body: body.update(message="not found"))
    assert response_problems(openapi, base, envelope), "an extra key in the error envelope"
    undocumented = replace(grant, status=418)
    assert response_problems(openapi, base, undocumented), "a status the document does not list"


def test_the_check_refuses_a_wrong_request(
    openapi: OpenAPI, gateway_conversation: Conversation
) -> None:
    base = gateway_conversation.base_url
    patch = first(openapi, gateway_conversation, "update_connector_by_provider")
    assert request_problems(openapi, base, patch) == []
    wrong = tampered_request(patch, lambda body: body.update(scope="Mail.Read"))
    assert "'Mail.Read' is not of type 'array'" in "\n".join(request_problems(openapi, base, wrong))
    listing = first(openapi, gateway_conversation, "get-all-grants")
    typo = replace(listing, query=listing.query + "&grantStatus=valid")
    assert request_problems(openapi, base, typo) == ["undeclared query parameter 'grantStatus'"]
    anonymous = replace(
        listing, headers=tuple(h for h in listing.headers if h[0] != "Authorization")
    )
    assert request_problems(openapi, base, anonymous), "no API key"
    misspelt = replace(listing, path="/v3/grant")
    assert operation_id(openapi, base, misspelt) is None


@pytest.mark.parametrize("relaxation", DOCUMENT_RELAXATIONS, ids=lambda a: a.pointer)
def test_each_relaxation_of_the_document_is_still_needed(
    relaxation: Amendment,
    pristine_document: dict[str, Any],
    gateway_conversation: Conversation,
    other_conversation: Conversation,
) -> None:
    others = [a for a in DOCUMENT_RELAXATIONS if a is not relaxation]
    stricter = build_openapi(amended(pristine_document, DOCUMENT_ADDITIONS + tuple(others)))
    problems = [
        *all_problems(stricter, gateway_conversation),
        *all_problems(stricter, other_conversation),
    ]
    assert problems, f"no longer needed: {relaxation.reason}"


def test_the_document_is_found_beside_the_checkout_or_where_the_override_says(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(REFERENCE_ENV, raising=False)
    assert reference_path() == REPO_ROOT.parent / "shared/reference/nylas-openapi-v3-subset.json"
    monkeypatch.setenv(REFERENCE_ENV, str(tmp_path / "copy.json"))
    assert reference_path() == tmp_path / "copy.json"


def test_a_missing_document_skips_with_the_reason_or_fails_when_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(REFERENCE_ENV, str(tmp_path / "absent.json"))
    monkeypatch.delenv(REQUIRE_ENV, raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"absent\.json"):
        load_document()
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=f"{REQUIRE_ENV}=1"):
        load_document()
