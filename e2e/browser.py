"""Python handles on the page-side client in e2e/pages/udp_relay.js.

Each method is one `page.evaluate` call. The WebSocket, the frame encoding and the frame decoding all
happen in Chromium's JavaScript; only JSON crosses the boundary (bytes as lowercase hex).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Page

Event = dict[str, Any]


class BrowserSocket:
    """One `new WebSocket(url)` opened by the page (binaryType "arraybuffer")."""

    def __init__(self, page: Page, url: str) -> None:
        self.page = page
        self.url = url
        self.id: int = page.evaluate("url => AeroUdp.open(url)", url)

    def _call(self, js_body: str, arg: Any = None) -> Any:
        # `s` is the RelaySocket, `arg` the argument; js_body is the body of an async arrow function.
        script = f"async ([id, arg]) => {{ const s = AeroUdp.socket(id); {js_body} }}"
        return self.page.evaluate(script, [self.id, arg])

    def wait_open(self) -> bool:
        """True once open; False if it closed (or failed) without ever opening."""
        return bool(self._call("return await s.opened;"))

    def errored(self) -> bool:
        return bool(self._call("return s.errored;"))

    def send_json(self, obj: Any) -> None:
        self._call("s.sendJson(arg);", obj)

    def send_v1(self, guest_port: int, remote_ip: str, remote_port: int, payload: bytes) -> str:
        """Encode a v1 frame in the page, send it, and return the frame's hex."""
        return str(
            self._call(
                "const f = AeroUdp.encodeV1(arg[0], arg[1], arg[2], AeroUdp.fromHex(arg[3]));"
                " s.sendBytes(f); return AeroUdp.toHex(f);",
                [guest_port, remote_ip, remote_port, payload.hex()],
            )
        )

    def send_v2(self, guest_port: int, remote_ip: str, remote_port: int, payload: bytes) -> str:
        """Encode a v2 frame (af from the address) in the page, send it, and return the frame's hex."""
        return str(
            self._call(
                "const f = AeroUdp.encodeV2(arg[0], arg[1], arg[2], AeroUdp.fromHex(arg[3]));"
                " s.sendBytes(f); return AeroUdp.toHex(f);",
                [guest_port, remote_ip, remote_port, payload.hex()],
            )
        )

    def next(self, timeout: float = 5.0) -> Event:
        """The next event: {"kind": "text", "text", "json"}, {"kind": "binary", "hex", "frame"},
        {"kind": "close", "code", "reason", "wasClean"} or {"kind": "timeout"}."""
        event: Event = self._call("return await s.next(arg);", int(timeout * 1000))
        return event

    def next_json(self, timeout: float = 5.0) -> Any:
        event = self.next(timeout)
        assert event["kind"] == "text", event
        return event["json"]

    def next_frame(self, timeout: float = 5.0) -> Event:
        event = self.next(timeout)
        assert event["kind"] == "binary", event
        return event

    def queued(self) -> int:
        return int(self._call("return s.queue.length;"))

    def close(self, code: int = 1000) -> Event:
        """Close from the page and return the close event."""
        event: Event = self._call(
            "if (s.closeEvent) return s.closeEvent; s.close(arg);"
            " while (true) { const e = await s.next(5000); if (e.kind === 'close' || e.kind === 'timeout')"
            " return e; }",
            code,
        )
        return event
