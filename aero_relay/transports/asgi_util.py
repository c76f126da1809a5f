"""Reading request facts from a raw ASGI scope (for the endpoints that bypass Quart)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

__all__ = ["header_getter", "query_getter", "remote_addr"]


def remote_addr(scope: dict[str, Any]) -> str:
    """`ip:port` like Go's `r.RemoteAddr` (IPv6 in brackets)."""
    client = scope.get("client")
    if not client:
        return ""
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def header_getter(scope: dict[str, Any]) -> Callable[[str], str]:
    """`header(name)`: the first value of a request header, or "" (Go's Header.Get)."""
    headers: list[tuple[bytes, bytes]] = scope.get("headers") or []

    def header(name: str) -> str:
        key = name.lower().encode()
        for k, v in headers:
            if k == key:
                return v.decode("latin-1")
        return ""

    return header


def query_getter(scope: dict[str, Any]) -> Callable[[str], str]:
    """`query(name)`: the first value of a query parameter, or "" (Go's URL.Query().Get)."""
    raw = scope.get("query_string", b"").decode("latin-1")
    parsed = parse_qs(raw, keep_blank_values=True)

    def query(name: str) -> str:
        values = parsed.get(name)
        return values[0] if values else ""

    return query
