"""Credentials → a viewer: API keys (core.guard.apikeys) and OIDC bearer tokens.

A bearer token is an API key when it starts with `emo_` (compared by SHA-256 in constant
time, `AccessConfig.viewer_for_api_key`), else a JWT from the identity provider of `[auth]` in
emoscope.toml — the same provider the dashboard signs in with: its signature is checked
against the provider's published keys (JWKS, found through `server_metadata_url`, cached and
fetched again at most once a minute when a token names a key not seen yet), its issuer must be
the provider's, its audience the `client_id` (or one of `[api] audience`), and it must not have
expired. Its claims then map to a viewer exactly as the dashboard's sign-in does
(`AccessConfig.viewer_for_claims`).

`Gate` holds the settings and re-reads them (emoscope.toml and the keys file) when either
changes, so an edited grant or a revoked key applies at the next request. It never opens by
accident: once a key or an identity provider has been configured for a store (remembered
beside it, core.guard.apikeys.configured), a keys file or settings file that is missing, empty or
broken, or the last key revoked, leaves the API **closed** (every request 401, an error in the
log, /v1/health/ready 503 saying why), never open. Open loopback mode without credentials is
the default only for a store that never had authentication, or when asked for explicitly
(`emoscope serve --open-loopback`).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from core.guard import apikeys
from core.guard.access import Viewer
from core.admin.settings import Settings, SettingsError, config_path, load_settings

log = logging.getLogger(__name__)

# Asymmetric algorithms only: a token signed with a shared secret (HS*) or none is refused.
ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
              "EdDSA")
LEEWAY_S = 30  # clock skew allowed on exp / nbf / iat


class Unauthenticated(Exception):
    """No usable credentials; the message says why in one line (→ 401)."""


class ProviderUnavailable(Exception):
    """The identity provider's keys cannot be fetched, so no token can be checked (→ 503)."""


def fetch_json(url: str, timeout_s: float = 10.0) -> dict:
    """GET a JSON document (the provider's metadata or key set)."""
    req = urllib.request.Request(url, headers={"Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as r:  # noqa: S310 — configured URL
        body = json.loads(r.read(1 << 20))
    if not isinstance(body, dict):
        raise ValueError("not a JSON object")
    return body


def _env(value):
    """`"env:NAME"` stands for $NAME, as in the dashboard's [auth] (dashboard/launch.py)."""
    if isinstance(value, str) and value.startswith("env:"):
        return os.environ.get(value[4:], "")
    return value


@dataclass
class Provider:
    """One OIDC provider of [auth]: its metadata and key set, fetched lazily and cached."""
    metadata_url: str
    client_id: str
    audiences: tuple[str, ...] = ()
    keys_ttl_s: float = 3600.0
    refetch_after_s: float = 60.0  # at most this often on an unknown key id
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _issuer: str | None = None
    _jwks_uri: str | None = None
    _keys: object | None = None
    _fetched_at: float = 0.0

    @property
    def accepted(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((self.client_id, *self.audiences)))

    def _refresh(self, force: bool = False):
        from joserfc.jwk import KeySet
        with self._lock:
            age = time.monotonic() - self._fetched_at
            if self._keys is not None and (age < self.refetch_after_s or
                                           (not force and age < self.keys_ttl_s)):
                return self._keys
            try:
                if self._jwks_uri is None:
                    meta = fetch_json(self.metadata_url)
                    self._issuer, self._jwks_uri = meta.get("issuer"), meta.get("jwks_uri")
                    if not self._issuer or not self._jwks_uri:
                        self._jwks_uri = None
                        raise ValueError("the metadata names no issuer or jwks_uri")
                self._keys = KeySet.import_key_set(fetch_json(self._jwks_uri))
                self._fetched_at = time.monotonic()
            except Exception as e:  # noqa: BLE001 — network, JSON, key format: one message
                if self._keys is not None:  # keep serving with the keys we have
                    log.warning("identity provider keys not refreshed: %s", e)
                    self._fetched_at = time.monotonic()
                    return self._keys
                raise ProviderUnavailable(f"the identity provider's keys cannot be fetched from "
                                          f"{self.metadata_url} ({str(e)[:120]})") from None
            return self._keys

    def claims(self, token: str) -> dict:
        """The verified claims of `token`, or Unauthenticated with the reason."""
        from joserfc import jwt
        from joserfc.errors import (ExpiredTokenError, InvalidClaimError, InvalidKeyIdError,
                                    JoseError, MissingClaimError)
        keys = self._refresh()
        try:
            try:
                tok = jwt.decode(token, keys, algorithms=list(ALGORITHMS))
            except InvalidKeyIdError:  # the provider may have rotated its keys
                tok = jwt.decode(token, self._refresh(force=True), algorithms=list(ALGORITHMS))
            jwt.JWTClaimsRegistry(
                leeway=LEEWAY_S, iss={"essential": True, "value": self._issuer},
                aud={"essential": True, "values": list(self.accepted)},
                exp={"essential": True}).validate(tok.claims)
        except ExpiredTokenError:
            raise Unauthenticated("the token has expired") from None
        except (InvalidClaimError, MissingClaimError) as e:
            raise Unauthenticated(f"the token is not for this service ({e.description or e})"
                                  ) from None
        except (JoseError, ValueError) as e:
            raise Unauthenticated(f"the token cannot be verified ({type(e).__name__})") from None
        return dict(tok.claims)


def providers_of(auth: dict, audiences: tuple[str, ...] = ()) -> tuple[Provider, ...]:
    """The OIDC providers of a Streamlit [auth] section: one flat provider, or named ones
    (`[auth.okta]`, ...), each with server_metadata_url and client_id."""
    found = []
    for section in [auth, *(v for v in auth.values() if isinstance(v, dict))]:
        url, client = _env(section.get("server_metadata_url")), _env(section.get("client_id"))
        if url and client:
            found.append(Provider(str(url), str(client), tuple(audiences)))
    return tuple(found)


class Gate:
    """Who may call: the settings (re-read when emoscope.toml or the keys file changes) and the
    identity providers they name."""

    def __init__(self, config: str | Path | None, db: str | Path, open_loopback: bool = False):
        self.config = config_path(config)
        self.db = Path(db)
        self.open_loopback = open_loopback  # asked for explicitly: no credentials on loopback
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self.settings: Settings = None  # type: ignore[assignment]
        self.providers: tuple[Provider, ...] = ()
        self.broken: str | None = None  # why the settings cannot be used now (→ closed)
        self._was_required = False
        self.refresh()

    def _current_stamp(self) -> tuple:
        try:
            conf = self.config.stat().st_mtime_ns if self.config else 0
        except OSError:
            conf = -1
        return conf, apikeys.stamp(self.db)

    def refresh(self) -> Settings:
        """The settings, read again if a file changed. A file broken after start-up keeps the
        last good settings (and says so in the log); at start-up it is an error."""
        stamp = self._current_stamp()
        if stamp == self._stamp:
            return self.settings
        with self._lock:
            if stamp == self._stamp:
                return self.settings
            try:
                s = load_settings(self.config, self.db)
            except SettingsError as e:
                if self.settings is None:
                    raise
                # Closed, not the previous settings: they may have been open.
                log.error("authentication closed, every request is refused until this is "
                          "fixed: %s", e)
                self.broken, self._stamp = str(e), stamp
                return self.settings
            old = {(p.metadata_url, p.client_id, p.audiences): p for p in self.providers}
            fresh = providers_of(s.auth, s.api_audiences)
            # Providers that did not change keep their cached keys.
            self.providers = tuple(old.get((p.metadata_url, p.client_id, p.audiences), p)
                                   for p in fresh)
            self.settings, self._stamp, self.broken = s, stamp, None
            if self.providers or s.access.api_keys:
                self._was_required = True
                apikeys.mark_configured(self.db)
            elif self._was_required or apikeys.configured(self.db):
                log.error("authentication closed: %s", self._closed_reason())
        return self.settings

    def _closed_reason(self) -> str:
        return ("authentication was configured for this store, and now no API key or identity "
                f"provider is (see {apikeys.keys_file(self.db)} and [auth] in emoscope.toml), "
                "so the API is closed; create a key (`emoscope apikey create`), or serve this "
                "machine without credentials with `emoscope serve --open-loopback`")

    @property
    def mode(self) -> str:
        """"credentials" (every caller needs them), "open" (loopback callers need none) or
        "closed" (nobody is let in: see `closed_because`)."""
        s = self.refresh()
        if self.broken:
            return "closed"
        if self.providers or s.access.api_keys:
            return "credentials"
        if self.open_loopback or not (self._was_required or apikeys.configured(self.db)):
            return "open"
        return "closed"

    @property
    def closed_because(self) -> str | None:
        if self.mode != "closed":
            return None
        if self.broken:
            return f"the settings cannot be read, so the API is closed: {self.broken}"
        return self._closed_reason()

    @property
    def required(self) -> bool:
        """Credentials are needed (or nobody gets in) unless the API is in open loopback mode."""
        return self.mode != "open"

    def viewer(self, token: str) -> tuple[Viewer, str]:
        """(viewer, method) for a bearer token or API key; Unauthenticated when it is none."""
        s = self.refresh()
        if token.startswith(apikeys.PREFIX):
            viewer = s.access.viewer_for_api_key(token)
            if viewer is None:
                raise Unauthenticated("unknown or revoked API key")
            return viewer, "api_key"
        if not self.providers:
            raise Unauthenticated("not an API key (they start with emo_), and no identity "
                                  "provider is configured for tokens")
        reasons = []
        for p in self.providers:
            try:
                return s.access.viewer_for_claims(p.claims(token)), "bearer"
            except Unauthenticated as e:
                reasons.append(str(e))
        raise Unauthenticated(reasons[0] if len(reasons) == 1 else "; ".join(reasons))
