"""Configuration: defaults, the instance file, `REAUTH_*` environment, then a test mapping.

Every setting is declared once in `SETTINGS` with its parser, so loading, validation and the
documentation table (docs/configuration.md) cannot drift apart.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from portal.signing import standard_webhook_key

ENV_PREFIX = "REAUTH_"
CONFIG_FILE_NAME = "config.toml"
NYLAS_REGION_URIS = {"us": "https://api.us.nylas.com", "eu": "https://api.eu.nylas.com"}
MAIL_BACKENDS = ("smtp", "console", "file")
ENVIRONMENTS = ("development", "production", "testing")


class ConfigError(Exception):
    """Raised at start-up with one line per problem found in the configuration."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


def parse_str(value: Any) -> str:
    return str(value).strip()


def parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"expected a whole number, got {value!r}") from None


def parse_seconds(value: Any) -> int:
    seconds = parse_int(value)
    if seconds < 0:
        raise ValueError(f"expected a number of seconds, 0 or more, got {value!r}")
    return seconds


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes", "on"}:
        return True
    if text in {"false", "0", "no", "off", ""}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def parse_list(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(item).strip() for item in value if str(item).strip()]
    return [item.strip() for item in str(value).split(",") if item.strip()]


@dataclass(frozen=True)
class Choice:
    """Parse one of a few words, in any case; `Settings` types the setting as a Literal of them."""

    allowed: tuple[str, ...]

    def __call__(self, value: Any) -> str:
        text = str(value).strip().lower()
        if text not in self.allowed:
            raise ValueError(f"expected one of {', '.join(self.allowed)}, got {value!r}")
        return text


def choice(*allowed: str) -> Choice:
    return Choice(allowed)


def parse_http_url(value: Any) -> str:
    text = str(value).strip().rstrip("/")
    parts = urlsplit(text)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(
            f"expected an http(s) URL such as https://portal.example.com, got {value!r}"
        )
    return text


def parse_database_url(value: Any) -> str:
    text = str(value).strip()
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError(f"not a database URL: {text!r}") from None
    # An unknown dialect or a driver that is not installed fails here, not in a traceback later.
    try:
        url.get_dialect().import_dbapi()
    except (NoSuchModuleError, ImportError):
        raise ValueError(
            f"no installed database driver for {url.drivername!r} "
            "(use sqlite:///... or postgresql+psycopg://... with reauth-portal[postgres])"
        ) from None
    return text


def parse_positive_int(value: Any) -> int:
    number = parse_int(value)
    if number <= 0:
        raise ValueError(f"expected a whole number above 0, got {value!r}")
    return number


def parse_webhook_secret(value: Any) -> str:
    """A `whsec_` secret must decode (base64, 24-64 bytes); any other string is taken raw.

    Messages never repeat the value.
    """
    text = str(value).strip()
    standard_webhook_key(text)
    return text


def parse_webhook_secrets(value: Any) -> list[str]:
    entries = parse_list(value)
    for index, entry in enumerate(entries, start=1):
        try:
            standard_webhook_key(entry)
        except ValueError as exc:
            raise ValueError(f"entry {index}: {exc}") from None
    return entries


IMAP_URL_SHAPE = "imaps://user@host:993/FOLDER"


def parse_imap_url(value: Any) -> str:
    """`imaps://user@host:993/INBOX`: IMAP over TLS, a user, a host; empty means off.

    Messages never repeat the value: a misplaced password would be in it.
    """
    text = str(value).strip()
    if not text:
        return ""
    parts = urlsplit(text)
    if parts.scheme != "imaps":
        raise ValueError(f"expected an IMAP-over-TLS URL such as {IMAP_URL_SHAPE}")
    if parts.password is not None:
        raise ValueError(f"put the password in {ENV_PREFIX}BOUNCE_PASSWORD, not in the URL")
    if not parts.username or not parts.hostname:
        raise ValueError(f"the URL needs a user and a host, as in {IMAP_URL_SHAPE}")
    try:
        parts.port  # noqa: B018 - urlsplit checks the port only when it is read
    except ValueError:
        raise ValueError("the port must be a number from 0 to 65535") from None
    if parts.query or parts.fragment:
        raise ValueError(f"the URL takes no ?query or #fragment: {IMAP_URL_SHAPE}")
    return text


def parse_days(value: Any) -> list[int]:
    """`3,7,12` -> [3, 7, 12]; `none` -> [] (no reminders)."""
    items = [item for item in parse_list(value) if item.lower() != "none"]
    days = [parse_int(item) for item in items]
    if any(day <= 0 for day in days):
        raise ValueError(f"expected positive whole days such as 3,7,12 or none, got {value!r}")
    return sorted(set(days))


def parse_hour_range(value: Any) -> str:
    """`22-7` (from 22:00 to 07:00); empty means no quiet hours."""
    text = str(value).strip()
    if not text:
        return ""
    start, dash, end = text.partition("-")
    if not dash or not start.strip().isdigit() or not end.strip().isdigit():
        raise ValueError(f"expected hours such as 22-7, got {value!r}")
    first, last = int(start), int(end)
    if first > 23 or last > 23:
        raise ValueError(f"hours run from 0 to 23, got {value!r}")
    return f"{first}-{last}"


def parse_timezone(value: Any) -> str:
    text = str(value).strip()
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {text!r}; use a name such as Europe/Berlin") from None
    return text


@dataclass(frozen=True)
class Setting:
    """One configuration key: its parser, default and one line of documentation."""

    name: str
    parse: Callable[[Any], Any]
    default: Any
    doc: str
    secret: bool = False


SETTINGS: tuple[Setting, ...] = (
    Setting("ENV", choice(*ENVIRONMENTS), "development", "development, production or testing"),
    Setting(
        "DATABASE_URL", parse_database_url, None, "SQLAlchemy URL; default SQLite under instance/"
    ),
    Setting(
        "SECRET_KEY", parse_str, None, "signs links and sessions; required in production", True
    ),
    Setting("SECRET_KEY_FALLBACKS", parse_list, [], "older keys still accepted, comma list", True),
    Setting("BASE_URL", parse_http_url, "http://127.0.0.1:5000", "public URL links derive from"),
    Setting("NYLAS_API_KEY", parse_str, None, "Nylas v3 API key", True),
    Setting("NYLAS_CLIENT_ID", parse_str, None, "Nylas application (client) id"),
    Setting("NYLAS_REGION", choice(*NYLAS_REGION_URIS), "us", "us or eu"),
    Setting("NYLAS_API_URI", parse_http_url, None, "explicit API base; wins over the region"),
    Setting("NYLAS_WEBHOOK_SECRETS", parse_list, [], "accepted webhook secrets, comma list", True),
    Setting("NYLAS_TIMEOUT", parse_int, 15, "seconds per Nylas call"),
    Setting("MAIL_BACKEND", choice(*MAIL_BACKENDS), None, "smtp, console or file"),
    Setting("MAIL_FILE_DIR", parse_str, None, "folder for the file backend; default instance/mail"),
    Setting("SMTP_HOST", parse_str, "localhost", "SMTP relay host"),
    Setting("SMTP_PORT", parse_int, 587, "SMTP relay port"),
    Setting("SMTP_USERNAME", parse_str, None, "SMTP login"),
    Setting("SMTP_PASSWORD", parse_str, None, "SMTP password", True),
    Setting("SMTP_STARTTLS", parse_bool, True, "use STARTTLS"),
    Setting(
        "BOUNCE_MAILBOX",
        parse_imap_url,
        None,
        "IMAP folder bounces arrive in, imaps://user@host:993/INBOX; unset = not read",
    ),
    Setting("BOUNCE_PASSWORD", parse_str, None, "password of the bounce mailbox's user", True),
    Setting(
        "BOUNCE_CA_FILE",
        parse_str,
        None,
        "PEM CA bundle the IMAP server's certificate must chain to; default the system's",
    ),
    Setting(
        "BOUNCE_POLL_SECONDS",
        parse_positive_int,
        300,
        "seconds between reads of the bounce mailbox",
    ),
    Setting(
        "BOUNCE_BATCH", parse_positive_int, 100, "messages read from the bounce mailbox per run"
    ),
    Setting(
        "BOUNCE_SOFT_LIMIT",
        parse_positive_int,
        3,
        "soft bounces (4.x.x failures) after which an address counts as undeliverable",
    ),
    Setting(
        "BOUNCE_RETRY_DELAY",
        parse_seconds,
        12 * 3600,
        "seconds before an email that soft-bounced is sent again",
    ),
    Setting("MAIL_FROM", parse_str, "Mailbox reconnection <no-reply@localhost>", "sender"),
    Setting("MAIL_REPLY_TO", parse_str, None, "reply-to address"),
    Setting("LINK_MAX_AGE", parse_int, 14 * 24 * 3600, "link lifetime in seconds"),
    Setting("PLUGINS", parse_list, [], "enabled plugins, comma list; empty = all installed"),
    Setting("RATELIMIT_STORAGE_URI", parse_str, "memory://", "Flask-Limiter storage"),
    Setting("APP_WEBHOOK_URL", parse_http_url, None, "the company's app notification URL"),
    Setting(
        "APP_WEBHOOK_SECRET",
        parse_webhook_secret,
        None,
        "signs outbound notifications: a whsec_ secret (`reauth webhooks new-secret`)",
        True,
    ),
    Setting(
        "APP_WEBHOOK_PREVIOUS_SECRETS",
        parse_webhook_secrets,
        [],
        "comma list of secrets being rotated out; notifications are signed with these too",
        True,
    ),
    Setting(
        "APP_WEBHOOK_SIGNATURE",
        choice("standard", "legacy"),
        "standard",
        "outbound signing: standard (Standard Webhooks) or legacy (deprecated, X-Reauth-*)",
    ),
    Setting("PRODUCT_NAME", parse_str, "Mailbox reconnection", "shown on pages and emails"),
    Setting("COMPANY_NAME", parse_str, "Your company", "who is asking users to sign in"),
    Setting("SUPPORT_CONTACT", parse_str, None, "address or URL users can ask for help"),
    Setting("LOGO_URL", parse_str, None, "logo shown on pages (same-origin path or https URL)"),
    Setting(
        "MAIL_RATE_PER_SECOND", float, 0.0, "emails per second, all workers together; 0 = no limit"
    ),
    Setting(
        "MAIL_RATE_PER_DOMAIN",
        float,
        0.0,
        "emails per second per recipient domain, all workers together; 0 = no limit",
    ),
    Setting("MAIL_MAX_AGE", parse_int, 2 * 24 * 3600, "seconds after which a retried email fails"),
    Setting("MAIL_RETRY_BASE", parse_int, 60, "first retry delay in seconds; doubles each time"),
    Setting("MAIL_BATCH_SIZE", parse_int, 20, "outbox rows a worker claims at a time"),
    Setting(
        "OUTBOX_LEASE_SECONDS", parse_int, 300, "how long a claim lasts before others may retake it"
    ),
    Setting("WORKER_POLL_SECONDS", float, 5.0, "pause between polls of an idle worker"),
    Setting(
        "WORKER_ONCE_DB_PATIENCE",
        parse_seconds,
        60,
        "seconds `reauth worker --once` waits for an unreachable database before exiting 1",
    ),
    Setting(
        "RECONCILE_GRACE_SECONDS",
        parse_seconds,
        300,
        "seconds after a callback began exchanging its code before the worker asks Nylas",
    ),
    Setting(
        "REMINDER_DAYS",
        parse_days,
        [3, 7, 12],
        "reminder days after the invite, comma list; none = off",
    ),
    Setting(
        "REMINDER_DEADLINE",
        parse_int,
        14,
        "no reminders later than this many days after the invite; 0 = none",
    ),
    Setting("QUIET_HOURS", parse_hour_range, "", "hours without reminders, e.g. 22-7"),
    Setting(
        "QUIET_TIMEZONE", parse_timezone, "UTC", "time zone of QUIET_HOURS, e.g. Europe/Berlin"
    ),
    Setting("ADMIN_IDLE_TIMEOUT", parse_int, 30 * 60, "admin session idle timeout in seconds"),
    Setting("ADMIN_SESSION_LIFETIME", parse_int, 12 * 3600, "admin session absolute lifetime, s"),
    Setting("ADMIN_LOGIN_RATE_LIMIT", parse_str, "10 per minute", "login POSTs per client address"),
    Setting(
        "ADMIN_TIMEZONE", parse_timezone, "UTC", "time zone of admin page times, e.g. Europe/Berlin"
    ),
    Setting("OIDC_ISSUER", parse_http_url, None, "OpenID Connect issuer for admin single sign-on"),
    Setting("OIDC_CLIENT_ID", parse_str, None, "OpenID Connect client (application) id"),
    Setting("OIDC_CLIENT_SECRET", parse_str, None, "OpenID Connect client secret", True),
    Setting("OIDC_ALLOWED", parse_list, [], "SSO admins: addresses or @domains, comma list"),
    Setting("OIDC_ROLE", choice("viewer", "operator"), "viewer", "role of new SSO admins"),
    Setting("AUTO_INVITE", parse_bool, False, "invite accounts whose grant expired at once"),
    Setting(
        "TENANT_AUTO_REAUTH",
        parse_bool,
        True,
        "start bulk re-authentication when an admin-track tenant's consent is recorded",
    ),
    Setting(
        "TENANT_BULK_RATE",
        float,
        10.0,
        "POST /v3/connect/custom calls per second, shared by all workers; 0 = no limit",
    ),
    Setting("WEBHOOK_MAX_BODY", parse_int, 1024 * 1024, "largest Nylas webhook body, bytes"),
    Setting("APP_WEBHOOK_TIMEOUT", parse_int, 10, "seconds per outbound notification POST"),
    Setting("PROXY_HOPS", parse_int, 0, "proxies in front of the app whose X-Forwarded-* to trust"),
    Setting("LOG_FORMAT", choice("text", "json"), "text", "text, or json: one object per line"),
    Setting(
        "LOG_LEVEL",
        choice("debug", "info", "warning", "error", "critical"),
        "info",
        "least severe level logged (any case)",
    ),
    Setting(
        "DEMO", parse_bool, False, "demo mode: /dev/mail shows captured mail; not in production"
    ),
)
SETTINGS_BY_NAME = {setting.name: setting for setting in SETTINGS}
SECRET_SETTING_NAMES = frozenset(s.name for s in SETTINGS if s.secret)
# Declared without a default, yet never None once loaded: apply_environment_rules fills them
# in (or, in production, refuses to start without them).
FILLED_AT_START_UP = frozenset(
    {
        "DATABASE_URL",
        "SECRET_KEY",
        "NYLAS_API_KEY",
        "NYLAS_CLIENT_ID",
        "NYLAS_API_URI",
        "MAIL_BACKEND",
        "MAIL_FILE_DIR",
    }
)


@dataclass(frozen=True)
class DerivedSetting:
    """A value apply_environment_rules computes from the settings; never configured."""

    name: str
    type: type
    doc: str


DERIVED_SETTINGS: tuple[DerivedSetting, ...] = (
    DerivedSetting("OAUTH_REDIRECT_URI", str, "the OAuth redirect_uri: BASE_URL/oauth/callback"),
)


def read_instance_file(instance_path: Path) -> dict[str, Any]:
    """Read the optional instance config file (TOML, same names as the environment)."""
    path = Path(os.environ.get(f"{ENV_PREFIX}CONFIG_FILE", instance_path / CONFIG_FILE_NAME))
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read the config file: {exc}"]) from None
    return {str(key).upper().removeprefix(ENV_PREFIX): value for key, value in data.items()}


def read_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Pick the `REAUTH_*` variables, without their prefix."""
    return {
        key.removeprefix(ENV_PREFIX): value
        for key, value in environ.items()
        if key.startswith(ENV_PREFIX) and key.removeprefix(ENV_PREFIX) in SETTINGS_BY_NAME
    }


def load_settings(
    instance_path: Path,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Merge defaults, instance file, environment and overrides; validate; derive the rest."""
    raw: dict[str, Any] = {}
    raw.update(read_instance_file(instance_path))
    raw.update(read_environment(os.environ if environ is None else environ))
    extra = dict(overrides or {})
    raw.update({k: v for k, v in extra.items() if k in SETTINGS_BY_NAME})
    settings, problems = parse_all(raw)
    if not problems:
        problems = apply_environment_rules(settings, instance_path)
    if problems:
        raise ConfigError(problems)
    settings.update({k: v for k, v in extra.items() if k not in SETTINGS_BY_NAME})
    return settings


def parse_all(raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    settings: dict[str, Any] = {}
    problems: list[str] = []
    for setting in SETTINGS:
        value = raw.get(setting.name)
        if value is None or (isinstance(value, str) and value.strip() == "" and setting.default):
            settings[setting.name] = setting.default
            continue
        try:
            settings[setting.name] = setting.parse(value)
        except ValueError as exc:
            problems.append(f"{ENV_PREFIX}{setting.name}: {exc}")
    return settings, problems


def apply_environment_rules(settings: dict[str, Any], instance_path: Path) -> list[str]:
    """Fill development defaults, or insist on real values in production."""
    production = settings["ENV"] == "production"
    problems: list[str] = []
    if production:
        for name in ("SECRET_KEY", "NYLAS_API_KEY", "NYLAS_CLIENT_ID", "DATABASE_URL"):
            if not settings[name]:
                problems.append(f"{ENV_PREFIX}{name}: required when {ENV_PREFIX}ENV=production")
        if not settings["BASE_URL"].startswith("https://"):
            problems.append(f"{ENV_PREFIX}BASE_URL: must be an https URL in production")
        if settings["DEMO"]:
            problems.append(f"{ENV_PREFIX}DEMO: demo mode cannot run in production")
        problems.extend(secret_problems(settings))
    else:
        settings["SECRET_KEY"] = settings["SECRET_KEY"] or development_secret_key(instance_path)
        settings["NYLAS_API_KEY"] = settings["NYLAS_API_KEY"] or "emulator-api-key"
        settings["NYLAS_CLIENT_ID"] = settings["NYLAS_CLIENT_ID"] or "emulator-client-id"
        settings["NYLAS_API_URI"] = settings["NYLAS_API_URI"] or "http://127.0.0.1:5050"
    if settings["MAIL_BACKEND"] is None:
        settings["MAIL_BACKEND"] = "smtp" if production else "file"
    settings["DATABASE_URL"] = settings["DATABASE_URL"] or default_database_url(instance_path)
    settings["MAIL_FILE_DIR"] = settings["MAIL_FILE_DIR"] or str(instance_path / "mail")
    settings["NYLAS_API_URI"] = (
        settings["NYLAS_API_URI"] or NYLAS_REGION_URIS[settings["NYLAS_REGION"]]
    )
    settings["OAUTH_REDIRECT_URI"] = f"{settings['BASE_URL']}/oauth/callback"
    problems.extend(bounce_problems(settings))
    problems.extend(app_webhook_problems(settings))
    return problems


def app_webhook_problems(settings: Mapping[str, Any]) -> list[str]:
    """Previous secrets need a current one; the legacy scheme has room for one secret only."""
    previous = f"{ENV_PREFIX}APP_WEBHOOK_PREVIOUS_SECRETS"
    if not settings["APP_WEBHOOK_PREVIOUS_SECRETS"]:
        return []
    if not settings["APP_WEBHOOK_SECRET"]:
        return [f"{previous}: set only with {ENV_PREFIX}APP_WEBHOOK_SECRET (the new secret)"]
    if settings["APP_WEBHOOK_SIGNATURE"] == "legacy":
        return [
            f"{previous}: the legacy scheme signs with one secret; rotate with "
            f"{ENV_PREFIX}APP_WEBHOOK_SIGNATURE=standard"
        ]
    return []


def bounce_problems(settings: Mapping[str, Any]) -> list[str]:
    """The bounce mailbox needs its password, and a CA file that exists when one is named."""
    problems = []
    if settings["BOUNCE_MAILBOX"] and not settings["BOUNCE_PASSWORD"]:
        problems.append(
            f"{ENV_PREFIX}BOUNCE_PASSWORD: required when {ENV_PREFIX}BOUNCE_MAILBOX is set"
        )
    ca_file = settings["BOUNCE_CA_FILE"]
    if ca_file and not Path(ca_file).is_file():
        problems.append(f"{ENV_PREFIX}BOUNCE_CA_FILE: no such file: {ca_file}")
    return problems


# Operator-made keys sign links, sessions and outbound notifications: they must be random.
GENERATED_KEYS = (
    "SECRET_KEY",
    "SECRET_KEY_FALLBACKS",
    "APP_WEBHOOK_SECRET",
    "APP_WEBHOOK_PREVIOUS_SECRETS",
)
# Values handed out by others (Nylas, the SMTP relay, the identity provider) have their own
# format; only the example file's placeholders are refused for them.
ISSUED_VALUES = (
    "NYLAS_API_KEY",
    "NYLAS_CLIENT_ID",
    "NYLAS_WEBHOOK_SECRETS",
    "SMTP_PASSWORD",
    "BOUNCE_PASSWORD",
    "OIDC_CLIENT_SECRET",
)
# docs/deploy/env.example writes `change-me...`, `nyk_v0_...` and `...` where values go.
PLACEHOLDER_WORDS = ("change-me", "changeme")
PLACEHOLDER_ENDINGS = ("...", "\u2026")
MIN_KEY_LENGTH = 32
# A random key of 32 characters or more, even hex, has far more distinct characters than this;
# a key below it is typed or repeated ("s" * 40, "abab...").
MIN_DISTINCT_CHARACTERS = 8
GENERATE_HINT = "generate one with python3 -c 'import secrets; print(secrets.token_urlsafe(48))'"
WHSEC_HINT = "generate one with `reauth webhooks new-secret`"


def secret_problems(settings: Mapping[str, Any]) -> list[str]:
    """Production refuses the example file's placeholders and keys too weak to be random.

    Messages name the setting (and the entry of a list), never the value.
    """
    problems = []
    for name in GENERATED_KEYS + ISSUED_VALUES:
        value = settings[name]
        entries = value if isinstance(value, list) else [value] if value else []
        for index, entry in enumerate(entries, start=1):
            where = f"entry {index} " if isinstance(value, list) else ""
            hint = WHSEC_HINT if name.startswith("APP_WEBHOOK_") else GENERATE_HINT
            problem = key_weakness(entry, hint) if name in GENERATED_KEYS else placeholder(entry)
            if problem:
                problems.append(f"{ENV_PREFIX}{name}: {where}{problem}")
                break
    return problems


def is_placeholder(value: str) -> bool:
    return any(word in value.lower() for word in PLACEHOLDER_WORDS) or value.endswith(
        PLACEHOLDER_ENDINGS
    )


def placeholder(value: str) -> str | None:
    if is_placeholder(value):
        return "is the example file's placeholder; put the real value here"
    return None


def key_weakness(key: str, hint: str = GENERATE_HINT) -> str | None:
    if is_placeholder(key):
        return f"is the example file's placeholder; {hint}"
    if len(key) < MIN_KEY_LENGTH:
        return f"use at least {MIN_KEY_LENGTH} characters"
    if len(set(key)) < MIN_DISTINCT_CHARACTERS:
        return f"has too few distinct characters to be random; {hint}"
    return None


def default_database_url(instance_path: Path) -> str:
    return f"sqlite:///{instance_path / 'reauth.sqlite3'}"


def development_secret_key(instance_path: Path) -> str:
    """Keep one random key per instance folder so links survive restarts outside production."""
    key_file = instance_path / "secret_key"
    if key_file.is_file():
        return key_file.read_text().strip()
    instance_path.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of this instance wrote it first
        return key_file.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key)
    return key
