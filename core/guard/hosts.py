"""Which names the API and the dashboard answer to, and which pages may act on them.

A browser page from anywhere can make a request to 127.0.0.1 (a form POST, a WebSocket), and
a name the attacker controls can be made to resolve to 127.0.0.1 (DNS rebinding), which makes
the attacker's page same-origin with the server. Both are stopped by looking at what the
browser cannot forge:

* `Host`: only loopback names (localhost, 127.0.0.1, [::1], any port), plus the names of
  `[server] allowed_hosts` in emoscope.toml once authentication is configured (sign-in for the
  dashboard; an API key or identity provider for the API).
* `Origin` (sent by browsers on every cross-origin POST and on every WebSocket): when present,
  its host must pass the same test; `null` (a sandboxed or file:// page) never does.
"""
from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK_NAMES = frozenset({"localhost"})


def host_name(value: str | None) -> str | None:
    """The name of a Host header value (`name`, `name:port`, `[v6]:port`), lower-case, without
    the port; None when it is not one."""
    value = (value or "").strip().lower()
    if not value or any(c in value for c in "/@?# \t"):
        return None
    if value.startswith("["):
        end = value.find("]")
        rest = value[end + 1:]
        if end < 0 or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return None
        return value[1:end] or None
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return name.rstrip(".") or None


def is_loopback_name(name: str | None) -> bool:
    if not name:
        return False
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def name_allowed(name: str | None, allowed: tuple[str, ...] = ()) -> bool:
    """A loopback name, or one of `allowed` (the caller passes them only when authentication
    is configured)."""
    return is_loopback_name(name) or (name is not None and
                                      name in {a.strip().lower().rstrip(".") for a in allowed})


def host_allowed(header: str | None, allowed: tuple[str, ...] = ()) -> bool:
    return name_allowed(host_name(header), allowed)


def origin_allowed(origin: str | None, allowed: tuple[str, ...] = ()) -> bool:
    """True when there is no Origin (not a browser, or a same-origin GET) or its host passes."""
    if origin is None:
        return True
    origin = origin.strip()
    if origin.lower() == "null":
        return False
    try:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and name_allowed(
            (parts.hostname or "").rstrip(".") or None, allowed)
    except ValueError:
        return False


def refusal(header: str | None) -> str:
    shown = (header or "")[:80]
    return (f"this server answers to localhost, 127.0.0.1 and [::1] (and the names of "
            f"[server] allowed_hosts once authentication is configured), not {shown!r}")
