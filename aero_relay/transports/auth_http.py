"""Authenticating plain HTTP requests (headers, then query; F-048/F-049)."""

from __future__ import annotations

from quart import Request

from aero_relay.context import RelayContext
from aero_relay.core.auth import AuthResult

__all__ = ["authorize_request"]


def authorize_request(ctx: RelayContext, request: Request) -> AuthResult:
    """Raise core.auth.AuthError (-> 401) or another exception (-> 500)."""
    headers = request.headers
    args = request.args

    def header(name: str) -> str:
        return str(headers.get(name, ""))

    def query(name: str) -> str:
        return str(args.get(name, ""))

    return ctx.authenticator.authorize(header, query, ctx.unix_seconds())
