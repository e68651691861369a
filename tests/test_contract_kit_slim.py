"""The contract kit runs from the slim `reauth-portal[testing]` extra (docs/plugins.md).

A plugin author installs `reauth-portal[testing]`: the portal's own dependencies plus pytest.
Importing the kit and its pytest plugin must then pull in nothing of the portal's heavier test
tooling (browsers, linters, fuzzers, the database drivers of the server extra).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {
    "playwright",
    "axe_playwright_python",
    "schemathesis",
    "hypothesis",
    "openapi_core",
    "ruff",
    "mypy",
    "psycopg",
    "redis",
    "gunicorn",
    "aiosmtpd",
    "psutil",
    "pytest_flask",
}
PROBE = (
    "import json, sys\n"
    "import portal.testing.contract, portal.testing.pytest_plugin\n"
    "print(json.dumps(sorted({name.split('.')[0] for name in sys.modules})))\n"
)


def test_the_testing_extra_is_only_pytest():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extra = project["optional-dependencies"]["testing"]
    assert [requirement.split(">")[0] for requirement in extra] == ["pytest"]


def test_importing_the_kit_loads_none_of_the_heavy_test_tools():
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, cwd=ROOT
    )
    loaded = set(json.loads(done.stdout))
    assert "portal" in loaded and "pytest" in loaded
    assert not loaded & HEAVY, sorted(loaded & HEAVY)
