"""Small test helpers shared by several test modules."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping

METRIC_LINE = re.compile(r'^aero_webrtc_udp_relay_events_total\{event="([^"]+)"\} ([0-9]+)$')


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_jwt(secret: str, claims: Mapping[str, object], header: Mapping[str, object] | None = None) -> str:
    """An HS256 JWT signed with `secret` (test-only; the relay verifies with its own code)."""
    h = b64url(json.dumps(header or {"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    p = b64url(json.dumps(dict(claims), separators=(",", ":")).encode())
    sig = hmac.new(secret.encode(), f"{h}.{p}".encode(), hashlib.sha256).digest()
    return f"{h}.{p}.{b64url(sig)}"


def parse_event_metrics(body: str) -> dict[str, int]:
    """Parse /metrics the way the original's e2e suite does (F-214)."""
    out: dict[str, int] = {}
    for line in body.splitlines():
        m = METRIC_LINE.match(line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


async def raw_http(host_port: str, request: bytes, *, read_timeout: float = 5.0) -> bytes:
    """Send raw bytes over TCP and read the response until the server closes (for inputs clients refuse)."""
    import trio

    host, port = host_port.rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    chunks: list[bytes] = []
    async with stream:
        await stream.send_all(request)
        with trio.move_on_after(read_timeout):
            while not _complete(b"".join(chunks)):
                data = await stream.receive_some(65536)
                if not data:
                    break
                chunks.append(data)
    return b"".join(chunks)


def _complete(resp: bytes) -> bool:
    head, sep, body = resp.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False
