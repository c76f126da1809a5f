"""CORS as a browser enforces it (PROTOCOL.md sections 1 and 6.3): the page origin is in ALLOWED_ORIGINS,
the foreign origin is not."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest

from e2e.harness import API_KEY, PageServer, Relay, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e

HEX32 = re.compile(r"^[0-9a-f]{32}$")

FETCH = """async ([url, init]) => {
    try {
        const res = await fetch(url, init);
        return {ok: true, status: res.status, body: await res.text(),
                requestId: res.headers.get("x-request-id")};
    } catch (err) {
        return {ok: false, error: String(err)};
    }
}"""


def requests_logged(relay: Relay, method: str, path: str, status: int) -> int:
    return sum(
        1
        for r in relay.log_records()
        if r.get("msg") == "http_request"
        and (r.get("method"), r.get("path"), r.get("status")) == (method, path, status)
    )


def test_allowed_origin_preflight_and_post_session(page: Page, api_key_relay: Relay) -> None:
    """F-015, F-016, F-051: a custom header makes Chromium preflight; the relay answers 204, then the
    POST succeeds and the exposed X-Request-ID header is readable from the page."""
    preflights = requests_logged(api_key_relay, "OPTIONS", "/session", 204)
    result = page.evaluate(
        FETCH, [api_key_relay.base_url + "/session", {"method": "POST", "headers": {"X-API-Key": API_KEY}}]
    )
    assert result["ok"], result
    assert result["status"] == 201
    assert HEX32.match(result["body"]), result
    assert HEX32.match(result["requestId"] or ""), result  # Access-Control-Expose-Headers: X-Request-ID
    assert wait_until(lambda: requests_logged(api_key_relay, "OPTIONS", "/session", 204) == preflights + 1)


def test_foreign_origin_fetch_is_refused(
    open_page: Callable[[PageServer], Page], foreign_page_server: PageServer, api_key_relay: Relay
) -> None:
    """F-015: an origin outside ALLOWED_ORIGINS gets 403 without CORS headers, so the fetch fails."""
    refusals = requests_logged(api_key_relay, "GET", "/healthz", 403)
    foreign = open_page(foreign_page_server)
    result = foreign.evaluate(FETCH, [api_key_relay.base_url + "/healthz", {}])
    assert result == {"ok": False, "error": "TypeError: Failed to fetch"}
    assert wait_until(lambda: requests_logged(api_key_relay, "GET", "/healthz", 403) == refusals + 1)
