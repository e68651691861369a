"""Render docs/configuration.md from `portal.config.SETTINGS` (the single source of truth).

    python -m portal.config_docs > docs/configuration.md

tests/test_config_docs.py fails when the file and the settings disagree.
"""

from __future__ import annotations

from portal.config import SETTINGS, Setting

INTRO = """# Configuration

Settings come, later ones winning, from: built-in defaults; the instance file
`instance/config.toml` (or the file named by `REAUTH_CONFIG_FILE`; TOML, keys as below without
the prefix, e.g. `BASE_URL = "https://portal.example.com"`); the environment (`REAUTH_` prefix);
and, for tests, the mapping given to `create_app(config)`. The instance folder is `instance/`
under the working directory, or `REAUTH_INSTANCE_PATH`.

Every value is checked at start-up. Each problem is reported on one line, for example
`reauth: configuration error: REAUTH_LINK_MAX_AGE: expected a whole number, got 'abc'`, and
the command exits with status 2 before doing anything.

Lists are comma-separated; booleans accept true/false (also 1/0, yes/no, on/off).

| variable | default | meaning |
|---|---|---|
"""

OUTRO = """
## Development and production
`REAUTH_ENV` is `development` unless set. Outside production the portal runs with no
configuration at all: a random `SECRET_KEY` is created once in `instance/secret_key` (so links
survive restarts), the Nylas settings point at the built-in emulator
(`http://127.0.0.1:5050`, API key `emulator-api-key`, client id `emulator-client-id`) and mail
goes to `.eml` files in `instance/mail` (the `file` backend).

With `REAUTH_ENV=production` the portal refuses to start without `REAUTH_SECRET_KEY` (32
characters or more), `REAUTH_NYLAS_API_KEY`, `REAUTH_NYLAS_CLIENT_ID` and
`REAUTH_DATABASE_URL`, requires an `https` `REAUTH_BASE_URL` and refuses `REAUTH_DEMO`; the
mail backend defaults to `smtp`.

Production also refuses placeholders and guessable keys, one line per setting that names it
(and the list entry), never its value:
- keys the operator makes, `REAUTH_SECRET_KEY`, each entry of `REAUTH_SECRET_KEY_FALLBACKS`
  and `REAUTH_APP_WEBHOOK_SECRET` when set, need 32 characters or more, at least 8 distinct
  characters (`"s" * 40` or `abab...` is not random) and no placeholder. Fallbacks get the
  same rule as the key: they still verify links and sessions, so a guessable fallback forges
  them as well as a guessable key. Make keys with
  `python3 -c 'import secrets; print(secrets.token_urlsafe(48))'`;
- values others issue, `REAUTH_NYLAS_API_KEY`, `REAUTH_NYLAS_CLIENT_ID`, each entry of
  `REAUTH_NYLAS_WEBHOOK_SECRETS`, `REAUTH_SMTP_PASSWORD` and `REAUTH_OIDC_CLIENT_SECRET`,
  keep whatever format their issuer gives them; only placeholders are refused.

A placeholder is a value containing `change-me` (or `changeme`) or ending in `...`, as
docs/deploy/env.example writes them (`change-me-to-64-random-characters`, `nyk_v0_...`,
`...`). Outside production none of this is checked, so development and test keys keep working. `REAUTH_NYLAS_API_URI` wins over `REAUTH_NYLAS_REGION` (`us`
-> `https://api.us.nylas.com`, `eu` -> `https://api.eu.nylas.com`). The OAuth `redirect_uri`
is always `{REAUTH_BASE_URL}/oauth/callback`, never derived from a request's Host header.
"""


def default_text(setting: Setting) -> str:
    if setting.default is None:
        return "—"
    if isinstance(setting.default, list | tuple):
        return ", ".join(str(item) for item in setting.default) or "(empty)"
    return f"`{setting.default}`"


def render() -> str:
    rows = []
    for setting in SETTINGS:
        secret = " (secret: never logged)" if setting.secret else ""
        rows.append(
            f"| `REAUTH_{setting.name}` | {default_text(setting)} | {setting.doc}{secret} |"
        )
    return INTRO + "\n".join(rows) + "\n" + OUTRO


if __name__ == "__main__":
    print(render(), end="")
