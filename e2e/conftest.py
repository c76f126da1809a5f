"""Fixtures for the real-browser e2e tests: Debian's headless Chromium driven by Playwright (sync API).

Why the sync API: pytest-trio runs with `trio_mode = true`, and Playwright's async API needs asyncio.
The sync API runs its own private asyncio loop on a greenlet inside plain `def` tests and fixtures,
which pytest-trio leaves alone, so no event loop is shared or nested (one catch, trio_asyncio's loop
policy, is handled below). Everything else the tests talk to (the relay subprocess, the UDP echo
servers, the page servers) lives outside the test thread.

Session-wide, started once: Chromium (a persistent context on a fresh temporary profile), two page
servers (the allowed origin and a foreign one), the UDP echo servers; relays are started lazily, one per
distinct environment, and reused.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import pytest

from e2e.harness import (
    API_KEY,
    JWT_SECRET,
    RELAY_BASE_ENV,
    PageServer,
    Relay,
    RelayFactory,
    StartRelay,
    UdpEcho,
    ipv6_loopback_available,
    temp_dir,
)

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page, Playwright

CHROMIUM = "/usr/bin/chromium"
# The project guide's flags. Playwright refuses `--user-data-dir` in `args`; the fresh temporary profile
# is passed as launch_persistent_context's user_data_dir instead, which becomes that same flag.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # WebRTC stays on loopback: without this, Chromium hides its host candidates behind mDNS names and
    # announces each name (an A record with the interface address) by multicast on the host's real
    # interfaces. The pages never signal a non-loopback candidate either way (pages/webrtc_relay.js);
    # the mDNS test runs a second Chromium with the default in a network namespace (NetNs).
    "--disable-features=WebRtcHideLocalIpsWithMdns",
]

OpenPage = Callable[[PageServer], "Page"]


def e2e_unavailable_reason() -> str | None:
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} not found (apt-get install chromium; ./scripts/test.sh installs it as root)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright Python package is not installed (.venv/bin/pip install -e '.[test]')"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every `e2e`-marked test, with the reason, when Chromium or Playwright is missing."""
    reason = e2e_unavailable_reason()
    if reason is None:
        return
    skip = pytest.mark.skip(reason=f"e2e: {reason}")
    for item in items:
        if item.get_closest_marker("e2e") is not None:
            item.add_marker(skip)


@contextlib.contextmanager
def _playwright_on_a_plain_asyncio_loop() -> Iterator[Playwright]:
    """Start Playwright's sync API on a stock asyncio loop.

    Importing aero_relay imports trio_asyncio, whose event loop policy makes `asyncio.new_event_loop()`
    return a trio-asyncio loop outside Trio; Playwright's greenlet dispatcher cannot drive that one
    ("You can't nest calls to run_until_complete()"). Playwright creates its loop once, in `start()`,
    so the patch is undone right after and nothing else in the session sees it.
    """
    from playwright.sync_api import sync_playwright

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(asyncio, "new_event_loop", asyncio.SelectorEventLoop)
        pw = sync_playwright().start()
    try:
        yield pw
    finally:
        pw.stop()


@pytest.fixture(scope="session")
def playwright_driver() -> Iterator[Playwright]:
    """The session's Playwright (sync API), for fixtures that launch a browser of their own."""
    with _playwright_on_a_plain_asyncio_loop() as pw:
        yield pw


@pytest.fixture(scope="session")
def browser_context(playwright_driver: Playwright) -> Iterator[BrowserContext]:
    """One headless Chromium for the whole session, on a fresh temporary profile."""
    with temp_dir("aero-e2e-chromium-") as profile:
        context = playwright_driver.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
        )
        context.set_default_timeout(10_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture(scope="session")
def page_server() -> Iterator[PageServer]:
    """The origin the relays allow (ALLOWED_ORIGINS)."""
    server = PageServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def foreign_page_server() -> Iterator[PageServer]:
    """A second origin (another port on 127.0.0.1) that no relay allows."""
    server = PageServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def relay_factory(page_server: PageServer) -> Iterator[StartRelay]:
    """`relay_factory({"AUTH_MODE": "api_key", "API_KEY": "k"})` -> a ready relay subprocess.

    Defaults: AUTH_MODE=none, DESTINATION_POLICY_PRESET=dev, WEBRTC_UDP_LISTEN_IP=127.0.0.1, JSON logs,
    ALLOWED_ORIGINS=<page_server origin>. One relay per distinct environment, reused for the session,
    so tests that share a relay must compare metric deltas and use their own JWT sids.
    """
    with temp_dir("aero-e2e-relay-") as log_dir:
        factory = RelayFactory(log_dir, {**RELAY_BASE_ENV, "ALLOWED_ORIGINS": page_server.origin})

        def start(env: Mapping[str, str] | None = None) -> Relay:
            return factory(env)

        try:
            yield start
        finally:
            factory.stop_all()


@pytest.fixture
def api_key_relay(relay_factory: StartRelay) -> Relay:
    """AUTH_MODE=api_key with API_KEY; PREFER_V2 so v2 replies are observable too (F-120)."""
    return relay_factory({"AUTH_MODE": "api_key", "API_KEY": API_KEY, "PREFER_V2": "true"})


@pytest.fixture
def jwt_relay(relay_factory: StartRelay) -> Relay:
    """AUTH_MODE=jwt with JWT_SECRET (HS256); defaults otherwise (PREFER_V2 off)."""
    return relay_factory({"AUTH_MODE": "jwt", "JWT_SECRET": JWT_SECRET})


@pytest.fixture
def open_page(browser_context: BrowserContext) -> Iterator[OpenPage]:
    """Open e2e/pages/index.html from a page server's origin; pages close after the test.

    Console messages and page errors are printed at teardown, so pytest shows them for a failed test.
    """
    pages: list[Page] = []
    log: list[str] = []

    def open_(server: PageServer) -> Page:
        page = browser_context.new_page()
        pages.append(page)
        page.on("console", lambda msg: log.append(f"console.{msg.type}: {msg.text}"))
        page.on("pageerror", lambda err: log.append(f"pageerror: {err}"))
        page.goto(server.url("index.html"))
        page.wait_for_function("() => typeof window.AeroUdp === 'object'")
        return page

    yield open_
    for page in pages:
        page.close()
    if log:
        print("browser log:\n  " + "\n  ".join(log))


@pytest.fixture
def page(open_page: OpenPage, page_server: PageServer) -> Page:
    """A page on the allowed origin."""
    return open_page(page_server)


@pytest.fixture(scope="session")
def udp_echo() -> Iterator[UdpEcho]:
    echo = UdpEcho("127.0.0.1")
    yield echo
    echo.close()


@pytest.fixture(scope="session")
def udp_echo_other_port() -> Iterator[UdpEcho]:
    """Answers from a different source port than the one it was sent to."""
    echo = UdpEcho("127.0.0.1", reply_from_other_port=True)
    yield echo
    echo.close()


@pytest.fixture(scope="session")
def udp_echo6() -> Iterator[UdpEcho]:
    if not ipv6_loopback_available():
        pytest.skip("no IPv6 loopback (::1) on this host")
    echo = UdpEcho("::1")
    yield echo
    echo.close()
