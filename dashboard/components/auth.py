"""Who is looking: sign-in through Streamlit's own OIDC (`st.login` / `st.user`), the viewer
their identity maps to (core.guard.access, from [access] in emoscope.toml), and the audit of what
they do.

With sign-in configured (an `[auth]` section in the secrets Streamlit reads; `emoscope
dashboard` generates it from emoscope.toml), nobody sees anything before signing in. Without
it, the dashboard serves the machine's own operator, and only on a loopback address.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import threading

import streamlit as st

from core.guard.access import EVERYTHING, Viewer, operator
from core.storage.audit import AuditError, AuditLog
from dashboard.components import context
from dashboard.components.markdown import md

VIEWER_KEY = "_viewer"
AUDITED_KEY = "_audited"  # acts already recorded in this browser session
REQUIRED_ENV = "EMOSCOPE_SIGN_IN"  # "required": the launcher configured sign-in


def sign_in_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets file at all
        return False


def loopback_only() -> bool:
    """Whether this server listens on loopback only (Streamlit's default is every address)."""
    addr = (st.get_option("server.address") or "").strip("[]")
    if addr.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


def provider() -> str | None:
    """The named provider when [auth] holds one sub-table of provider settings, else None."""
    try:
        section = st.secrets["auth"]
        named = [k for k, v in section.items() if hasattr(v, "keys")]
    except Exception:
        return None
    return named[0] if len(named) == 1 and "client_id" not in section else None


def host_refusal() -> str | None:
    """Why this browser's request must get nothing, or None: the Host (and Origin) it came
    with must be a loopback name, or one of [server] allowed_hosts when sign-in is configured
    (core.guard.hosts). A page under another name resolved to this machine (DNS rebinding) would
    otherwise be served as this machine's operator. Streamlit has no such check of its own; the
    headers are those of the browser's WebSocket to this server."""
    from core.guard import hosts
    try:
        headers = st.context.headers
        host, origin = headers.get("Host"), headers.get("Origin")
    except Exception:  # noqa: BLE001 — no server behind this run (a bare script run)
        return None
    if not headers:  # no request at all (AppTest); a browser's WebSocket always has a Host
        return None
    try:
        allowed = context.settings().allowed_hosts if sign_in_configured() else ()
    except Exception:  # noqa: BLE001 — broken settings allow no extra name
        allowed = ()
    if not hosts.host_allowed(host, allowed):
        return hosts.refusal(host)
    if not hosts.origin_allowed(origin, allowed):
        return hosts.refusal(origin)
    return None


def resolve() -> Viewer | None:
    """The viewer for this browser session, or None when they must sign in first (the caller
    then shows only the sign-in page)."""
    if not sign_in_configured():
        if os.environ.get(REQUIRED_ENV) == "required" or not loopback_only():
            return None  # fail closed: sign-in was asked for, or the port is open to others
        local = operator()
        viewer = Viewer(local.who, local.roles, EVERYTHING, "this machine")
    elif not st.user.is_logged_in:
        return None
    else:
        viewer = context.settings().access.viewer_for_claims(st.user.to_dict())
    st.session_state[VIEWER_KEY] = viewer
    return viewer


def current() -> Viewer:
    """The viewer of this browser session: the one app.py resolved, or resolved now (a page
    run on its own goes through the same rules); PermissionError when nobody is signed in."""
    viewer = st.session_state.get(VIEWER_KEY)
    if not isinstance(viewer, Viewer):
        viewer = resolve()
    if viewer is None:
        raise PermissionError("nobody is signed in")
    return viewer


def sign_in_page() -> None:
    """The only page an unauthenticated browser gets."""
    st.title("Emoscope")
    if not sign_in_configured():
        if os.environ.get(REQUIRED_ENV) == "required":
            st.error("Sign-in is required here but its settings could not be read, so this "
                     "dashboard shows nothing. Check [auth] in emoscope.toml.")
        else:
            st.error("This dashboard is reachable from other machines but no sign-in is "
                     "configured, so it shows nothing. Configure [auth] in emoscope.toml, or "
                     "serve it on 127.0.0.1 only (`emoscope dashboard` does so by default).")
        return
    st.write("Recordings of people's voices are behind a sign-in. Sign in with your "
             "organisation's account to continue.")
    st.button("Sign in", type="primary", key="sign_in",
              on_click=lambda: st.login(provider()) if provider() else st.login())


def no_role_page() -> None:
    viewer = current()
    st.title("Emoscope")
    st.warning(f"You are signed in as {viewer.who}, but emoscope.toml grants this identity no "
               "role, so there is nothing to show. Ask an administrator to add a grant for "
               "your group or e-mail.")
    sidebar()


def sidebar() -> None:
    viewer = current()
    st.sidebar.caption(f"Signed in as **{ui_escape(viewer.label)}** · "
                       f"{', '.join(sorted(viewer.roles)) or 'no role'} · "
                       f"{viewer.scope.describe()}")
    if sign_in_configured():
        st.sidebar.button("Sign out", key="sign_out", on_click=st.logout)


def ui_escape(text: str) -> str:
    return md(text)


# -- the audit ----------------------------------------------------------------------------------
def log() -> AuditLog:
    return AuditLog.beside(context.db_path())


def record(action: str, target: str | None = None, detail: dict | None = None) -> bool:
    """Record an act before it is carried out; False (with a message) when it cannot be, and
    then the caller must not carry it out."""
    try:
        log().record(current(), action, target, detail)
        return True
    except AuditError as e:
        st.error(f"Not done: {e}.")
        return False


class _SignIns:
    """The sign-ins already recorded by this server process (keys, not identities)."""

    def __init__(self, most: int = 100_000):
        self.seen: dict[str, None] = {}
        self.most = most
        self.lock = threading.Lock()

    def first(self, key: str) -> bool:
        with self.lock:
            return key not in self.seen

    def add(self, key: str) -> None:
        with self.lock:
            self.seen[key] = None
            while len(self.seen) > self.most:  # the oldest go first
                self.seen.pop(next(iter(self.seen)))


@st.cache_resource(show_spinner=False)
def _sign_ins() -> _SignIns:
    return _SignIns()


def sign_in_key() -> str | None:
    """What tells one sign-in from the next: the ID token's issuer, subject, issue time and
    nonce. Every page load of a browser signed in once carries the same (Streamlit keeps the
    token's claims in its cookie); signing in again makes a new one. None without them."""
    claims = st.user.to_dict()
    if not (claims.get("iat") or claims.get("nonce")):
        return None
    parts = [str(claims.get(k) or "") for k in ("iss", "sub", "email", "iat", "nonce")]
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def record_sign_in(viewer: Viewer) -> bool:
    """Record a sign-in once per sign-in, not on every page load (each is a new Streamlit
    session); False when it cannot be recorded (then nothing is shown)."""
    detail = {"roles": sorted(viewer.roles)}
    key = sign_in_key()
    if key is None:  # no token claims to tell sign-ins apart: once per Streamlit session
        return record_once("sign-in", viewer.who, detail)
    seen = _sign_ins()
    if not seen.first(key):
        return True
    if record("sign-in", viewer.who, detail):
        seen.add(key)
        return True
    return False


def record_once(action: str, target: str | None = None, detail: dict | None = None) -> bool:
    """Record an act once per browser session (a rerun of the same view is not a new act)."""
    done = st.session_state.setdefault(AUDITED_KEY, set())
    key = (action, target)
    if key in done:
        return True
    if record(action, target, detail):
        done.add(key)
        return True
    return False
