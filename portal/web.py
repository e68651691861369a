"""Web plumbing shared by every blueprint: CSRF, rate limits, headers, error pages, log hygiene."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any
from urllib.parse import urlsplit

from flask import (
    Flask,
    Response,
    current_app,
    g,
    jsonify,
    make_response,
    render_template,
    request,
)
from flask.sansio.app import App
from flask.typing import ResponseReturnValue
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect, same_origin
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix


class BaseUrlCSRFProtect(CSRFProtect):
    """Flask-WTF's session-bound token check, plus an origin check against REAUTH_BASE_URL.

    Flask-WTF's own https check compares the Referer with the request's Host header, and only
    when the proxy said https. The portal takes nothing from Host: under an https base URL a
    form POST must name the configured origin, in `Origin` (sent by browsers on every POST
    unless the referrer policy is no-referrer) or else in `Referer`.
    """

    def protect(self, *args: Any, **kwargs: Any) -> None:
        super().protect(*args, **kwargs)
        base_url = str(current_app.config["BASE_URL"])
        checked = g.get("csrf_valid") and base_url.startswith("https://")
        if checked and not posted_from(base_url):
            self._error_response("The request did not come from a page of this portal.")


def posted_from(base_url: str) -> bool:
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return same_origin(origin, base_url)
    return bool(request.referrer) and same_origin(request.referrer, base_url)


csrf = BaseUrlCSRFProtect()
limiter = Limiter(key_func=get_remote_address, default_limits=[])
log = logging.getLogger(__name__)

# Link tokens sit in the path; codes and states in query strings or JSON. Logs must not keep them.
SECRET_IN_PATH = re.compile(r"(/r/)(?!renew\b|result\b)[A-Za-z0-9_.\-]{8,}")
REDACTED_FIELDS = (
    "code|state|token|code_challenge|challenge|code_verifier|password|client_secret|api_key"
    "|secret|access_token|refresh_token|id_token|csrf_token"
)
SECRET_IN_QUERY = re.compile(
    rf"""((?:\b(?:{REDACTED_FIELDS})=)|(?:["'](?:{REDACTED_FIELDS})["']\s*:\s*["']?))[^&\s"',;}}]+"""
)
BEARER = re.compile(r"(\bBearer\s+)[^\s\"',]+", re.IGNORECASE)
# SQL echo (sqlalchemy.engine at INFO/DEBUG) would print parameters and rows: PKCE verifiers.
HIDDEN_VALUES_LOGGERS = ("sqlalchemy.engine", "sqlalchemy.pool")
# Paths (percent-decoded: `%0a` is a line feed) and user agents are the client's to choose. C0
# controls (CR, LF, ESC...), DEL, C1 controls and the Unicode line separators are written as
# `\x0a` / `\u2028`, as werkzeug's own request log does, so one record is one line and no
# terminal sequence reaches an operator's screen. Backslashes stay as they are, which keeps
# escaping idempotent (a record may pass here twice: factory, then filter).
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# The werkzeug dev server colours its request lines after escaping the path; drop its colours
# rather than print them as `\x1b[33m`.
ANSI_STYLE = re.compile("\x1b\\[[0-9;]*m")


def redact(text: str) -> str:
    text = SECRET_IN_PATH.sub(r"\1[redacted]", text)
    return BEARER.sub(r"\1[redacted]", SECRET_IN_QUERY.sub(r"\1[redacted]", text))


def escape_controls(text: str) -> str:
    def escaped(match: re.Match[str]) -> str:
        code = ord(match[0])
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return CONTROL_CHARACTERS.sub(escaped, text)


def scrub(record: logging.LogRecord) -> None:
    """Make a log record safe in place: one line, no secrets in it, its SQL values or traceback.

    The message is checked once formatted, so values interpolated from dict args (gunicorn's
    access log passes its atoms that way) are covered like any other.
    """
    if record.name.startswith(HIDDEN_VALUES_LOGGERS) and isinstance(record.args, tuple):
        record.args = tuple(
            arg if isinstance(arg, str | int | float) else "[values hidden]" for arg in record.args
        )
    try:
        message = record.getMessage()
    except Exception:  # a malformed call: let logging report it as usual
        return
    styled = ANSI_STYLE.sub("", message) if record.name == "werkzeug" else message
    clean = redact(escape_controls(styled))
    if clean != message:
        record.msg, record.args = clean, None
    if record.exc_info and not record.exc_text:
        # Formatters reuse exc_text, so the traceback is written scrubbed too.
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))


class RedactSecrets(logging.Filter):
    """Scrub link tokens, OAuth codes and states from a log record before it is written."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub(record)
        return True


def install_log_redaction() -> None:
    """Scrub every log record as it is made, whichever library logs it; filters stay as backup.

    A filter on a logger misses records of its child loggers and of other libraries (urllib3,
    SQLAlchemy, the SDK); the record factory sees them all.
    """
    previous = logging.getLogRecordFactory()
    if not getattr(previous, "redacts_secrets", False):

        def scrubbed_record(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            scrub(record)
            return record

        scrubbed_record.redacts_secrets = True  # type: ignore[attr-defined]
        logging.setLogRecordFactory(scrubbed_record)
    for name in ("werkzeug", "gunicorn.access", "gunicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


class JsonLines(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message[, exception].

    It writes what the record holds after `scrub` (the record factory ran it when the record was
    made) and scrubs the message and traceback once more, so a record made before redaction was
    installed is no exception. Line breaks inside values are JSON-escaped: one record, one line.
    """

    def format(self, record: logging.LogRecord) -> str:
        scrub(record)
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(escape_controls(record.getMessage())),
        }
        if record.exc_text:  # scrub() wrote the traceback, redacted, for any exc_info
            entry["exception"] = record.exc_text
        elif record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


class PortalLogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The root handler the portal installs; marked so a second app replaces, not adds, it."""


def log_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing REAUTH_LOG_FORMAT records (text or json) to stream (stderr)."""
    handler = PortalLogHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonLines() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(RedactSecrets())
    return handler


def configure_logging(log_format: str, log_level: str) -> None:
    """Send every record to stderr in REAUTH_LOG_FORMAT, from REAUTH_LOG_LEVEL up.

    The app factory calls this outside tests (pytest owns logging there); a later app replaces
    the handler an earlier one installed.
    """
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, PortalLogHandler)]:
        root.removeHandler(handler)
    root.addHandler(log_handler(log_format))
    root.setLevel(log_level.upper())


def init_web(app: Flask) -> None:
    """Wire CSRF, rate limits, security headers and friendly error pages into the app."""
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)  # the session bounds the token's life
    app.config["WTF_CSRF_SSL_STRICT"] = False  # replaced by BaseUrlCSRFProtect's origin check
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = app.config["BASE_URL"].startswith("https://")
    trust_proxies(app, app.config["PROXY_HOPS"])
    csrf.init_app(app)
    limiter.init_app(app)
    install_log_redaction()
    if app.config["ENV"] != "testing":
        configure_logging(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])
    app.after_request(security_headers)
    app.register_error_handler(CSRFError, csrf_failed)
    app.register_error_handler(429, too_many_requests)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected_error)


def trust_proxies(app: Flask, hops: int) -> None:
    """Believe exactly `hops` proxies' X-Forwarded-For/-Proto; never X-Forwarded-Host.

    Client addresses feed the rate limits, so a client must not be able to pick its own; the
    host never matters because links and redirect URIs come from REAUTH_BASE_URL.
    """
    if hops > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]


def security_headers(response: Response) -> Response:
    nylas_origin = "{0.scheme}://{0.netloc}".format(urlsplit(app_config("NYLAS_API_URI")))
    response.headers.setdefault(
        "Content-Security-Policy",
        "default-src 'self'; script-src 'none'; style-src 'self'; img-src 'self' https:; "
        f"form-action 'self' {nylas_origin}; frame-ancestors 'none'; base-uri 'none'",
    )
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "strict-origin-when-cross-origin")
    response.headers.setdefault("X-Frame-Options", "DENY")
    if app_config("BASE_URL").startswith("https://"):
        response.headers.setdefault(
            "Strict-Transport-Security", "max-age=63072000; includeSubDomains"
        )
    return response


def app_config(key: str) -> str:
    from flask import current_app

    return str(current_app.config.get(key) or "")


def csrf_failed(error: CSRFError) -> ResponseReturnValue:
    if path_errors(request.path) is not None:
        return http_error(error)
    return plain_error_page("Please try again", CSRF_MESSAGE, 400)


def too_many_requests(error: HTTPException) -> ResponseReturnValue:
    """Flask-Limiter's own text ("5 per 15 minute") means nothing to a person; say what to do."""
    if request.path.startswith(PROGRAM_PATHS):
        return http_error(error)
    return plain_error_page("Too many requests", RATE_LIMITED_MESSAGE, 429)


PROGRAM_PATHS = ("/api/", "/webhooks/")
CSRF_MESSAGE = (
    "This page was open for too long or came from somewhere else. Go back, reload the "
    "page and press the button again."
)
RATE_LIMITED_MESSAGE = (
    "You have asked several times in a short while. Please wait 15 minutes and try again."
)
UNEXPECTED_MESSAGE = (
    "We could not finish this request. Please try again in a few minutes; if it keeps "
    "happening, contact support."
)
PATH_ERRORS_KEY = "reauth_path_errors"


@dataclass(frozen=True)
class PathErrors:
    """How a blueprint answers every error under its paths, instead of the pages below."""

    http_error: Callable[[HTTPException], ResponseReturnValue]
    unexpected: Callable[[Exception], ResponseReturnValue]


def answer_errors_under(app: App, path_prefix: str, errors: PathErrors) -> None:
    """Route every error under `path_prefix` to `errors`, routing's own 404 and 405 included.

    Werkzeug raises those before any blueprint is matched, so a blueprint's error handlers
    never see them; the app's handlers below ask here first.
    """
    app.extensions.setdefault(PATH_ERRORS_KEY, {})[path_prefix] = errors


def path_errors(path: str) -> PathErrors | None:
    owners: dict[str, PathErrors] = current_app.extensions.get(PATH_ERRORS_KEY, {})
    return next((errors for prefix, errors in owners.items() if path.startswith(prefix)), None)


def http_error(error: HTTPException) -> ResponseReturnValue:
    """A plain page for people; JSON for the programs that call the API and webhooks.

    The exception's own headers (a 405's Allow) are kept whatever the body.
    """
    owner = path_errors(request.path)
    if owner is not None:
        answer = owner.http_error(error)
    elif request.path.startswith(PROGRAM_PATHS):
        answer = json_error(error.code or 500, error.name)
    else:
        answer = error_page(error)
    return with_headers_of(error, make_response(answer))


def error_page(error: HTTPException) -> ResponseReturnValue:
    return plain_error_page(error.name, error.description or "", error.code or 500)


def with_headers_of(error: HTTPException, response: Response) -> Response:
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers.setdefault(name, value)
    return response


def json_error(status: int, message: str) -> ResponseReturnValue:
    """The error shape of the webhook paths: {"error": {"status", "message"}}."""
    return jsonify(error={"status": status, "message": message}), status


def unexpected_error(error: Exception) -> ResponseReturnValue:
    """Log the fault (scrubbed) and show a plain page: no stack trace reaches a user."""
    if isinstance(error, HTTPException):
        return http_error(error)
    owner = path_errors(request.path)
    if owner is not None:
        return owner.unexpected(error)
    log.exception("unexpected error on %s %s", request.method, redact(request.path))
    return plain_error_page("Something went wrong", UNEXPECTED_MESSAGE, 500)


def plain_error_page(title: str, message: str, status: int) -> ResponseReturnValue:
    """The plain error page a person sees: what happened and what to do, never a trace."""
    return render_template("errors/error.html", title=title, message=message, status=status), status
