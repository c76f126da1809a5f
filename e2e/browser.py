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


class BrowserRtc:
    """One RTCPeerConnection with a `udp` DataChannel, made by e2e/pages/webrtc_relay.js (AeroRtc).

    `signal` is which of Chromium's candidates the page may send: "loopback" (the default) or "mdns"
    (loopback and `.local` names); a candidate naming a real interface is never sent.
    """

    def __init__(self, page: Page, session_id: int) -> None:
        self.page = page
        self.id = session_id

    @classmethod
    def signal(
        cls, page: Page, url: str, *, auth: dict[str, str] | None = None, signal: str = "loopback"
    ) -> BrowserRtc:
        """Trickle over `GET /webrtc/signal`: optional auth message, the offer, then candidates."""
        sid = page.evaluate(
            "([url, opts]) => AeroRtc.signal(url, opts)", [url, {"auth": auth, "signal": signal}]
        )
        return cls(page, int(sid))

    @classmethod
    def http(
        cls,
        page: Page,
        url: str,
        kind: str,
        *,
        headers: dict[str, str] | None = None,
        signal: str = "loopback",
    ) -> BrowserRtc:
        """Non-trickle: the offer after gathering, POSTed to `/webrtc/offer` (kind "webrtc") or `/offer`
        (kind "offer", versioned body)."""
        sid = page.evaluate(
            "([url, kind, opts]) => AeroRtc.http(url, kind, opts)",
            [url, kind, {"headers": headers or {}, "signal": signal}],
        )
        return cls(page, int(sid))

    def _call(self, js_body: str, arg: Any = None) -> Any:
        # `s` is the RtcSession, `arg` the argument; js_body is the body of an async arrow function.
        script = f"async ([id, arg]) => {{ const s = AeroRtc.session(id); {js_body} }}"
        return self.page.evaluate(script, [self.id, arg])

    def started(self) -> bool:
        """True once the offer went out and (HTTP) the answer was applied."""
        return bool(self._call("return await s.started;"))

    def wait_open(self, timeout: float = 10.0) -> bool:
        """True once the DataChannel is open; False if it closed first or did not open in time."""
        return bool(self._call("return await s.waitOpen(arg);", int(timeout * 1000)))

    def send_v1(self, guest_port: int, remote_ip: str, remote_port: int, payload: bytes) -> str:
        """Encode a v1 frame in the page, send it on the channel, and return the frame's hex."""
        return str(
            self._call(
                "const f = AeroUdp.encodeV1(arg[0], arg[1], arg[2], AeroUdp.fromHex(arg[3]));"
                " s.send(f); return AeroUdp.toHex(f);",
                [guest_port, remote_ip, remote_port, payload.hex()],
            )
        )

    def send_v2(self, guest_port: int, remote_ip: str, remote_port: int, payload: bytes) -> str:
        """Encode a v2 frame in the page, send it on the channel, and return the frame's hex."""
        return str(
            self._call(
                "const f = AeroUdp.encodeV2(arg[0], arg[1], arg[2], AeroUdp.fromHex(arg[3]));"
                " s.send(f); return AeroUdp.toHex(f);",
                [guest_port, remote_ip, remote_port, payload.hex()],
            )
        )

    def next(self, timeout: float = 5.0) -> Event:
        """The next DataChannel event: {"kind": "binary", "hex", "frame"}, {"kind": "text", "text"},
        {"kind": "dc-close"} or {"kind": "timeout"}."""
        event: Event = self._call("return await s.messages.next(arg);", int(timeout * 1000))
        return event

    def next_frame(self, timeout: float = 5.0) -> Event:
        event = self.next(timeout)
        assert event["kind"] == "binary", event
        return event

    def queued(self) -> int:
        return int(self._call("return s.messages.items.length;"))

    def next_signal(self, timeout: float = 5.0) -> Event:
        """The next signaling event: {"kind": "json", "json"}, {"kind": "ws-close", "code", "reason",
        "wasClean"} or {"kind": "timeout"}."""
        event: Event = self._call("return await s.signals.next(arg);", int(timeout * 1000))
        return event

    def signals(self) -> list[Event]:
        """Every signaling event received so far that no `next_signal` has consumed."""
        events: list[Event] = self._call("return s.signals.items.slice();")
        return events

    def selected_pair(self) -> dict[str, Any] | None:
        """getStats()'s selected candidate pair: state, nominated, and both candidates' address, port,
        candidateType and protocol (Chromium reports a local peer-reflexive address as "")."""
        pair: dict[str, Any] | None = self._call("return await s.selectedPair();")
        return pair

    def summary(self) -> dict[str, Any]:
        """connectMs, candidates (gathered, signaled, withheld, remote), sentTexts, states, errors, http,
        sessionId, dcState, pcState."""
        summary: dict[str, Any] = self._call("return s.summary();")
        return summary

    def close(self) -> None:
        self.page.evaluate("id => AeroRtc.drop(id)", self.id)
