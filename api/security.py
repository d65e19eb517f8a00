"""Who may call the API, and where it may listen.

`require_identity` is the one dependency every route but health goes through:

* Authentication configured — an identity provider in [auth] of emoscope.toml, or any API key
  (`emoscope apikey create`): every request, from anywhere, needs `Authorization: Bearer
  <token or key>` (or `X-API-Key: <key>`); none is 401, a bad one 401 with the reason, an
  identity without a role 403. The API may then listen beyond loopback.
* Nothing configured: the API trusts only the machine it runs on, as the dashboard does — it
  listens on loopback, serves loopback clients as the machine's operator (every session), and
  refuses others (403). The client address is the socket peer, or what a trusted local proxy
  forwarded (uvicorn's proxy headers), so a proxied remote caller is refused too.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from fastapi import HTTPException, WebSocketException, status
from starlette.requests import HTTPConnection

from api.auth import Gate, ProviderUnavailable, Unauthenticated
from core.access import EVERYTHING, Viewer, operator

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class BindRefused(ValueError):
    """Listening on this address would expose the API without authentication."""


@dataclass(frozen=True)
class Identity:
    """Who is calling, and the viewer whose scope every read of theirs takes."""
    subject: str
    method: str  # "loopback", "api_key" or "bearer"
    viewer: Viewer


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, authenticated: bool) -> None:
    """Refuse a non-loopback address while nothing authenticates callers."""
    if is_loopback(host) or authenticated:
        return
    raise BindRefused(f"refusing to listen on {host}: the API has no authentication configured "
                      "(no [auth] identity provider in emoscope.toml and no API key), so it "
                      "serves this machine only; use --host 127.0.0.1, or create a key with "
                      "`emoscope apikey create`")


def _deny(conn: HTTPConnection, code: int, reason: str):
    if conn.scope["type"] == "websocket":
        ws_code = status.WS_1013_TRY_AGAIN_LATER if code == 503 else \
            status.WS_1008_POLICY_VIOLATION
        return WebSocketException(code=ws_code, reason=reason[:120])
    headers = {"WWW-Authenticate": "Bearer"} if code == 401 else None
    if code == 503:
        headers = {"Retry-After": "30"}
    return HTTPException(code, reason, headers=headers)


def credentials(conn: HTTPConnection) -> str | None:
    auth = conn.headers.get("authorization", "")
    scheme, _, token = auth.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = conn.headers.get("x-api-key", "").strip()
    return key or None


def local_operator() -> Viewer:
    """A loopback caller on a server without authentication: this machine's operator."""
    me = operator()
    return Viewer(me.who, me.roles, EVERYTHING, "this machine")


def require_identity(conn: HTTPConnection) -> Identity:
    """The caller's identity, or 401/403 (HTTP) / close 1008 (WebSocket)."""
    host = conn.client.host if conn.client else None
    gate: Gate = conn.app.state.gate
    token = credentials(conn)
    if not gate.required:
        if token is not None:
            raise _deny(conn, 401, "this server has no API keys or identity provider "
                                   "configured; send no credentials (loopback only)")
        if is_loopback(host):
            viewer = local_operator()
            return Identity(viewer.who, "loopback", viewer)
        raise _deny(conn, 403, f"client {host or 'unknown'} is not on this machine; the API "
                               "serves loopback clients only until authentication is "
                               "configured")
    if token is None:
        raise _deny(conn, 401, "credentials required: send `Authorization: Bearer <API key or "
                               "identity token>`")
    try:
        viewer, method = gate.viewer(token)
    except Unauthenticated as e:
        raise _deny(conn, 401, str(e))
    except ProviderUnavailable as e:
        raise _deny(conn, 503, str(e))
    if not viewer.roles:
        raise _deny(conn, 403, f"{viewer.who} has no role in the [access] grants of "
                               "emoscope.toml, so there is nothing to show")
    return Identity(viewer.who, method, viewer)
