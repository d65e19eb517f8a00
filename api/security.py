"""Who may call the API, and where it may listen.

Until authentication is configured the API trusts only the machine it runs on: it listens on
loopback and serves loopback clients. `require_identity` is the one dependency every route
but health goes through; bearer tokens and API keys plug in there.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from fastapi import HTTPException, WebSocketException, status
from starlette.requests import HTTPConnection

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class BindRefused(ValueError):
    """Listening on this address would expose the API without authentication."""


@dataclass(frozen=True)
class Identity:
    """Who is calling. Loopback callers today; token and key holders once auth lands."""
    subject: str
    method: str  # "loopback" (later: "bearer", "api_key")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, auth: object | None) -> None:
    """Refuse a non-loopback address while nothing authenticates callers."""
    if is_loopback(host) or auth is not None:
        return
    raise BindRefused(f"refusing to listen on {host}: the API has no authentication configured "
                      "yet, so it serves this machine only; use --host 127.0.0.1 (and a reverse "
                      "proxy that authenticates, if it must be reached from elsewhere)")


def _deny(conn: HTTPConnection, reason: str):
    if conn.scope["type"] == "websocket":
        return WebSocketException(code=status.WS_1008_POLICY_VIOLATION, reason=reason)
    return HTTPException(status.HTTP_403_FORBIDDEN, reason)


def require_identity(conn: HTTPConnection) -> Identity:
    """The caller's identity, or 403 (HTTP) / close 1008 (WebSocket).

    Today: loopback clients only. The client address is the socket peer, or what a trusted
    local proxy forwarded (uvicorn's proxy headers), so a proxied remote caller is refused."""
    host = conn.client.host if conn.client else None
    settings = getattr(conn.app.state, "settings", None)
    if settings is not None and settings.auth is not None:
        # Tokens and API keys are checked here once they exist; until then nobody gets in.
        raise _deny(conn, "authentication is configured but not implemented in this version")
    if is_loopback(host):
        return Identity(subject=f"loopback:{host}", method="loopback")
    raise _deny(conn, f"client {host or 'unknown'} is not on this machine; the API serves "
                      "loopback clients only until authentication is configured")
