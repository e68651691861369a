"""Pytest fixtures shipped with the portal (registered through the `pytest11` entry point).

`nylas_emulator` serves a fresh Nylas v3 emulator on a free loopback port for one test; point a
`nylas.Client` (or the portal's REAUTH_NYLAS_API_URI) at `nylas_emulator.url`.
`plugin_flow` walks one person through the portal with a given plugin against that emulator;
portal.testing.contract.PluginContract is the full contract test kit built on both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

# The contract kit's plain asserts get pytest's detailed messages (it is imported just below).
pytest.register_assert_rewrite("portal.testing.contract")

from portal.plugins import Plugin  # noqa: E402
from portal.testing.contract import FlowReport, SampleAccount, run_flow  # noqa: E402
from portal.testing.emulator import EmulatorServer, EmulatorState  # noqa: E402

EMULATOR_API_KEY = "emulator-api-key"
EMULATOR_CLIENT_ID = "emulator-client-id"
# The portal's redirect URI with its development BASE_URL, so a default app works unchanged.
EMULATOR_CALLBACK_URIS = ("http://127.0.0.1:5000/oauth/callback",)
# Tests should not wait minutes for a retried webhook.
TEST_RETRY_DELAYS = (0.05, 0.1)


def make_emulator_state() -> EmulatorState:
    """Build the state the fixtures serve: dev credentials, quick webhook retries."""
    return EmulatorState(
        api_key=EMULATOR_API_KEY,
        client_id=EMULATOR_CLIENT_ID,
        callback_uris=list(EMULATOR_CALLBACK_URIS),
        webhook_retry_delays=TEST_RETRY_DELAYS,
        webhook_timeout=5.0,
    )


@pytest.fixture
def nylas_emulator() -> Iterator[EmulatorServer]:
    """Serve a fresh emulator for one test; yields the server (`.url`, `.api_key`, `.state`...)."""
    with EmulatorServer(make_emulator_state()) as server:
        yield server
        server.state.wait_for_deliveries(timeout=5.0)


@pytest.fixture(scope="session")
def nylas_emulator_session() -> Iterator[EmulatorServer]:
    """Serve one emulator for the whole session; call `.state.reset()` between uses."""
    with EmulatorServer(make_emulator_state()) as server:
        yield server


@pytest.fixture
def plugin_flow(
    nylas_emulator: EmulatorServer, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., FlowReport]:
    """Walk one person through the portal with only the given plugin enabled.

    `plugin_flow(MyPlugin, sample_account("ada@gmail.com", "gmail"))` serves a fresh portal
    beside the emulator, imports and invites the account, signs in and returns a FlowReport.
    """

    def run(plugin_class: type[Plugin], account: SampleAccount) -> FlowReport:
        workdir = tmp_path_factory.mktemp("plugin-flow")
        return run_flow(plugin_class, account, nylas_emulator, workdir)

    return run
