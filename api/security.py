"""Who may call the API, and where it may listen.

`require_identity` is the one dependency every route but health goes through:

* Authentication configured — an identity provider in [auth] of emoscope.toml, or any API key
  (`emoscope apikey create`): every request, from anywhere, needs `Authorization: Bearer
  <token or key>` (or `X-API-Key: <key>`); none is 401, a bad one 401 with the reason, an
  identity without a role 403. The API may then listen beyond loopback.
* Nothing configured, ever (or `--open-loopback` asked for): the API trusts only the machine
  it runs on, as the dashboard does — it listens on loopback, serves loopback clients as the
  machine's operator (every session), and refuses others (403).
* Configured once, and now no usable key or provider (the keys file deleted, emptied or
  broken, the last key revoked, a broken emoscope.toml): closed — every request 401 with the
  reason (api.auth.Gate). The client address is the socket peer, or what a trusted local proxy
  forwarded (uvicorn's proxy headers), so a proxied remote caller is refused too.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import threading
import time
from dataclasses import dataclass

from fastapi import HTTPException, WebSocketException, status
from starlette.requests import HTTPConnection

from api.auth import Gate, ProviderUnavailable, Unauthenticated
from core.guard import hosts
from core.guard.access import EVERYTHING, Viewer, operator
from core.storage.audit import AuditError, AuditLog

log = logging.getLogger(__name__)

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
    if conn.scope["type"] == "websocket":  # HTTP refusals are audited by the app's handler
        if code in (401, 403):
            audit_denied(conn, code, reason)
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
    mode = gate.mode
    if mode == "closed":
        raise _deny(conn, 401, gate.closed_because or "the API is closed")
    if mode == "open":
        if token is not None:
            raise _deny(conn, 401, "this server has no API keys or identity provider "
                                   "configured; send no credentials (loopback only)")
        if is_loopback(host):
            viewer = local_operator()
            conn.state.identity = Identity(viewer.who, "loopback", viewer)
            return conn.state.identity
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
    identity = Identity(viewer.who, method, viewer)
    conn.state.identity = identity  # for the audit of a refusal further on
    if not viewer.roles:
        raise _deny(conn, 403, f"{viewer.who} has no role in the [access] grants of "
                               "emoscope.toml, so there is nothing to show")
    return identity


# -- denied attempts, in the audit -------------------------------------------------------------
class DeniedAudit:
    """Records refused requests (401, 403, 404, and Host / Origin refusals) in the audit: who
    (the identity when known, else "unauthenticated" and the client address), what, and why.
    At most `per_minute` a minute are written, so a flood of bad requests cannot fill the disk
    with fsynced lines; the next one written says how many were left out."""

    def __init__(self, db, per_minute: int = 120):
        self.db, self.per_minute = db, per_minute
        self._window, self._count, self._skipped = 0, 0, 0
        self._lock = threading.Lock()

    def __call__(self, conn_scope: dict, status_code: int, reason: str,
                 identity: "Identity | None" = None) -> None:
        now = int(time.monotonic() // 60)
        with self._lock:
            if now != self._window:
                self._window, self._count = now, 0
            self._count += 1
            if self._count > self.per_minute:
                self._skipped += 1
                return
            skipped, self._skipped = self._skipped, 0
        client = conn_scope.get("client") or (None, None)
        detail = {"status": status_code, "method": conn_scope.get("method") or "WEBSOCKET",
                  "path": conn_scope.get("path", "")[:200], "reason": reason[:200],
                  "client": client[0], "via": "api"}
        if skipped:
            detail["not_recorded_before"] = skipped
        who = identity.viewer if identity is not None else "unauthenticated"
        try:
            AuditLog.beside(self.db).record(who, "denied", detail["path"], detail)
        except AuditError as e:  # the refusal stands either way
            log.error("a denied request could not be audited: %s", e)


def audit_denied(conn: HTTPConnection, status_code: int, reason: str) -> None:
    recorder = getattr(conn.app.state, "denied", None)
    if recorder is not None:
        recorder(conn.scope, status_code, reason, getattr(conn.state, "identity", None))


# -- Host and Origin -------------------------------------------------------------------------
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


class HostCheck:
    """ASGI middleware (HTTP and WebSocket): answers only to loopback names, plus [server]
    allowed_hosts once authentication is configured (core.guard.hosts), and refuses state-changing
    requests and WebSockets whose Origin is another site's (cross-site request forgery: a page
    elsewhere posting a form, or opening a stream, to this machine)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers") or []}
        allowed = ()
        gate = scope["app"].state.gate
        if gate.mode == "credentials":
            allowed = gate.settings.allowed_hosts
        host, origin = headers.get("host"), headers.get("origin")
        problem = None
        if not hosts.host_allowed(host, allowed):
            code, problem = 400, hosts.refusal(host)
        elif (scope["type"] == "websocket" or scope.get("method") in STATE_CHANGING) and \
                not hosts.origin_allowed(origin, allowed):
            code, problem = 403, (f"a request from the page {origin[:80]!r} is refused: pages "
                                  "of other sites may not act on this server")
        if problem is None:
            return await self.app(scope, receive, send)
        recorder = getattr(scope["app"].state, "denied", None)
        if recorder is not None:
            recorder(scope, code, problem)
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": status.WS_1008_POLICY_VIOLATION,
                        "reason": problem[:120]})
            return
        body = json.dumps({"detail": problem}).encode()
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
