"""Who may see which sessions: viewers, their roles and scopes, and how an identity gets them.

A `Viewer` is a person (or the machine's operator) with roles and a `Scope`: the teams whose
sessions they see and the tags (programmes) whose sessions they see. `core.storage.queries.Reader`
turns the scope into SQL in `_sessions_where`, the one place every read passes through.

Roles, from `[access]` in emoscope.toml, mapped from the identity's groups or e-mail:
- supervisor: the sessions of their teams;
- analyst: the sessions of their programmes (a programme names teams and/or tags);
- admin: every session, the audit, erasure.
An identity that no grant matches gets no role and sees nothing.
"""
from __future__ import annotations

import getpass
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Iterable, Mapping

ROLES = ("supervisor", "analyst", "admin")


class AccessError(ValueError):
    """A broken [access] section; the message names the entry."""


@dataclass(frozen=True)
class Scope:
    """Which sessions: all of them, or those of these teams or carrying any of these tags."""
    everything: bool = False
    teams: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()

    def __or__(self, other: "Scope") -> "Scope":
        return Scope(self.everything or other.everything, self.teams | other.teams,
                     self.tags | other.tags)

    @property
    def empty(self) -> bool:
        return not (self.everything or self.teams or self.tags)

    def covers(self, team: str | None, tags: Iterable[str] | None = ()) -> bool:
        """The same test as the SQL condition, for one session's team and tags."""
        return self.everything or (team in self.teams) or bool(self.tags & set(tags or ()))

    def describe(self) -> str:
        if self.everything:
            return "every session"
        if self.empty:
            return "no session"
        parts = [f"team {', '.join(sorted(self.teams))}"] if self.teams else []
        parts += [f"tag {', '.join(sorted(self.tags))}"] if self.tags else []
        return "sessions of " + " or ".join(parts)


EVERYTHING = Scope(everything=True)
NOTHING = Scope()


@dataclass(frozen=True)
class Viewer:
    """Who reads, and what they may read. Hashable: dashboard caches key on it."""
    who: str  # e-mail, or the OIDC subject, or "local:<user>" / "api-key:<name>"
    roles: frozenset[str] = frozenset()
    scope: Scope = NOTHING
    name: str = ""

    @property
    def is_admin(self) -> bool:
        return "admin" in self.roles

    @property
    def can_upload(self) -> bool:
        return bool(self.roles & {"admin", "supervisor"})

    @property
    def label(self) -> str:
        return f"{self.name} <{self.who}>" if self.name and self.name != self.who else self.who


def operator() -> Viewer:
    """Whoever runs a command on this machine: they can read the database file anyway, so
    they see everything (the CLI's default; `--as` narrows it)."""
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = "unknown"
    return Viewer(f"local:{user}", frozenset({"admin"}), EVERYTHING)


@dataclass(frozen=True)
class Grant:
    role: str
    group: str | None = None
    email: str | None = None
    teams: tuple[str, ...] = ()
    programmes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ApiKey:
    """An API key, stored as its SHA-256 only."""
    name: str
    sha256: str
    role: str
    teams: tuple[str, ...] = ()
    programmes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccessConfig:
    groups_claim: str = "groups"
    programmes: Mapping[str, Scope] = field(default_factory=dict)
    grants: tuple[Grant, ...] = ()
    api_keys: tuple[ApiKey, ...] = ()

    @classmethod
    def from_dict(cls, raw: dict | None) -> "AccessConfig":
        raw = raw or {}
        progs = {}
        for name, body in (raw.get("programmes") or {}).items():
            if not isinstance(body, dict):
                raise AccessError(f"[access.programmes] {name} must be a table of teams/tags")
            progs[name] = Scope(teams=frozenset(map(str, body.get("teams", ()))),
                                tags=frozenset(map(str, body.get("tags", ()))))
        grants = tuple(_grant(g, i, progs) for i, g in enumerate(raw.get("grants") or ()))
        keys = tuple(_api_key(k, i, progs) for i, k in enumerate(raw.get("api_keys") or ()))
        return cls(str(raw.get("groups_claim", "groups")), progs, grants, keys)

    # -- identities → viewers ---------------------------------------------------------------
    def _scope_of(self, role: str, teams: Iterable[str], programmes: Iterable[str]) -> Scope:
        if role == "admin":
            return EVERYTHING
        scope = Scope(teams=frozenset(teams))
        for p in programmes:
            scope = scope | self.programmes[p]
        return scope

    def viewer_for_claims(self, claims: Mapping) -> Viewer:
        """The viewer an OIDC identity (its ID-token claims, as st.user gives them) maps to:
        the union of every grant whose group is among its groups or whose e-mail is its own.
        An e-mail grant needs `email_verified: true`: many providers let a user type any
        address into their profile, so an unverified one proves nothing."""
        email = str(claims.get("email") or "").strip().lower()
        verified = claims.get("email_verified") is True
        who = email or str(claims.get("sub") or "")
        groups = claims.get(self.groups_claim) or ()
        if isinstance(groups, str):
            groups = [g.strip() for g in groups.replace(",", " ").split()]
        groups = {str(g) for g in groups}
        roles, scope = set(), NOTHING
        for g in self.grants:
            if (g.group is not None and g.group in groups) or \
                    (g.email is not None and email and verified and g.email.lower() == email):
                roles.add(g.role)
                scope = scope | self._scope_of(g.role, g.teams, g.programmes)
        return Viewer(who or "unknown", frozenset(roles), scope, str(claims.get("name") or ""))

    def viewer_for_email(self, email: str) -> Viewer:
        """The viewer for an e-mail alone (its e-mail grants; no groups): `emoscope export --as`,
        where the operator vouches for the address."""
        return self.viewer_for_claims({"email": email, "email_verified": True})

    def tags_refused(self, viewer: Viewer, tags: Iterable[str]) -> list[str]:
        """The tags among `tags` that this viewer may not put on an upload: a tag that a
        programme follows (`diary` for the wellbeing programme) files the recording into that
        programme's analysts' scope, so only those who see that tag themselves, and admins,
        may use it. A supervisor of a call team cannot file a call as a diary."""
        if viewer.scope.everything:
            return []
        followed = set().union(*(p.tags for p in self.programmes.values())) \
            if self.programmes else set()
        return [t for t in dict.fromkeys(tags) if t in followed and t not in viewer.scope.tags]

    def viewer_for_api_key(self, key: str) -> Viewer | None:
        """The viewer an API key stands for, or None; keys are compared by hash, in constant time."""
        digest = hashlib.sha256(key.encode()).hexdigest()
        for k in self.api_keys:
            if hmac.compare_digest(digest, k.sha256.lower()):
                return Viewer(f"api-key:{k.name}", frozenset({k.role}),
                              self._scope_of(k.role, k.teams, k.programmes))
        return None


def hash_api_key(key: str) -> str:
    """What is kept of a key (core.guard.apikeys): its SHA-256, never the key. Keys are 256 random
    bits, so a fast hash is enough: there is nothing to guess from it."""
    return hashlib.sha256(key.encode()).hexdigest()


def _check_role(role, where: str) -> str:
    if role not in ROLES:
        raise AccessError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
    return role


def _check_programmes(names, progs, where: str) -> tuple[str, ...]:
    unknown = [p for p in names if p not in progs]
    if unknown:
        raise AccessError(f"{where}: unknown programme(s) {', '.join(unknown)}; define them "
                          "under [access.programmes]")
    return tuple(names)


def _grant(raw: dict, i: int, progs) -> Grant:
    where = f"[[access.grants]] #{i + 1}"
    if not isinstance(raw, dict) or not (raw.get("group") or raw.get("email")):
        raise AccessError(f"{where}: a grant needs `group` or `email`")
    extra = set(raw) - {"role", "group", "email", "teams", "programmes"}
    if extra:
        raise AccessError(f"{where}: unknown key(s) {', '.join(sorted(extra))}")
    return Grant(_check_role(raw.get("role"), where), raw.get("group"), raw.get("email"),
                 tuple(map(str, raw.get("teams", ()))),
                 _check_programmes(raw.get("programmes", ()), progs, where))


def _api_key(raw: dict, i: int, progs) -> ApiKey:
    where = f"API key #{i + 1}"
    if not isinstance(raw, dict) or not raw.get("name") or len(str(raw.get("sha256", ""))) != 64:
        raise AccessError(f"{where}: an API key needs `name` and `sha256` (64 hex digits)")
    return ApiKey(str(raw["name"]), str(raw["sha256"]), _check_role(raw.get("role"), where),
                  tuple(map(str, raw.get("teams", ()))),
                  _check_programmes(raw.get("programmes", ()), progs, where))
