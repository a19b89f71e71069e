"""Tokens: how they are made, stored and recognised.

A token is shown once, when it is made, and stored only as its SHA-256
digest: tokens carry 256 random bits, so a fast digest is enough (no
password stretching is needed for secrets nobody chose), and lookups by
digest go through a unique index. The prefix says what a token is for,
which makes a leaked one easy to recognise in logs and secret scanners.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    """What a bearer token lets its holder do."""

    ADMIN = "admin"
    AGENT = "agent"
    ENROLMENT = "enrolment"
    VIEWER = "viewer"


PREFIXES = {
    Role.ADMIN: "tnr_admin_",
    Role.AGENT: "tnr_agent_",
    Role.ENROLMENT: "tnr_enrol_",
    Role.VIEWER: "tnr_view_",
}

#: Meta key under which the admin token's digest is kept.
ADMIN_TOKEN_META = "admin_token_hash"


def new_token(role: Role) -> str:
    """A fresh random token for `role`."""
    return PREFIXES[role] + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The digest under which a token is stored and looked up."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def role_of(token: str) -> Role | None:
    """The role a token's prefix names, or None for a token of no known form."""
    for role, prefix in PREFIXES.items():
        if token.startswith(prefix):
            return role
    return None


def same_digest(stored: str | None, token: str) -> bool:
    """Compare a stored digest with a presented token in constant time."""
    if not stored:
        return False
    return hmac.compare_digest(stored, token_hash(token))


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling, as its token says.

    `board_id` is set for agents, enrolment keys and viewers; `agent_id` only
    for agents. Admins act on any board.
    """

    role: Role
    board_id: str | None = None
    agent_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @property
    def is_agent(self) -> bool:
        return self.role is Role.AGENT


ADMIN = Caller(Role.ADMIN)
