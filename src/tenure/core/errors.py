"""Tenure's errors: one root, a stable code and HTTP status on each.

    TenureError                 (code, http_status, message, details)
    ├── Unauthorized            401  no token, or an unknown one
    ├── Forbidden               403  an admin route without the admin token
    ├── NotHolder               403  acting on a task the caller never held
    ├── NotFound                404  unknown id, or an id of another board
    ├── LeaseLost               409  the caller's lease on the task has ended
    ├── Conflict                409  duplicate id, dependency cycle, forbidden state
    ├── PayloadTooLarge         413  a body over the limit
    ├── InvalidInput            422  a field out of range or of the wrong form
    └── StoreUnavailable        503  the database cannot be reached; nothing written

Every transport renders them the same way: `{"error": {"code", "message",
"details"}}` (see `TenureError.to_dict`).
"""

from __future__ import annotations

from typing import Any, ClassVar


class TenureError(Exception):
    """The root of every error Tenure reports to a caller."""

    code: ClassVar[str] = "internal"
    http_status: ClassVar[int] = 500

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details: dict[str, Any] = dict(details or {})

    def to_dict(self) -> dict[str, Any]:
        """The error in SPEC's one shape."""
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, details={self.details!r})"


class Unauthorized(TenureError):
    """No token, or a token Tenure does not know (or has revoked)."""

    code = "unauthorized"
    http_status = 401


class Forbidden(TenureError):
    """The token is valid but may not do this (e.g. an admin route)."""

    code = "forbidden"
    http_status = 403


class NotHolder(TenureError):
    """The caller acts on a task it never held."""

    code = "not_holder"
    http_status = 403


class NotFound(TenureError):
    """Unknown id, or an id of another board (never revealed as such)."""

    code = "not_found"
    http_status = 404


class LeaseLost(TenureError):
    """The caller's lease on the task has ended; it should stop and move on."""

    code = "lease_lost"
    http_status = 409


class Conflict(TenureError):
    """A duplicate id, a dependency cycle, or a state that forbids the action."""

    code = "conflict"
    http_status = 409


class PayloadTooLarge(TenureError):
    """A request body over the limit."""

    code = "payload_too_large"
    http_status = 413


class InvalidInput(TenureError):
    """A field out of range or of the wrong form."""

    code = "invalid_input"
    http_status = 422


class StoreUnavailable(TenureError):
    """The database cannot be reached; nothing was written."""

    code = "store_unavailable"
    http_status = 503


ERROR_CLASSES: tuple[type[TenureError], ...] = (
    Unauthorized,
    Forbidden,
    NotHolder,
    NotFound,
    LeaseLost,
    Conflict,
    PayloadTooLarge,
    InvalidInput,
    StoreUnavailable,
)


def error_from_dict(payload: dict[str, Any]) -> TenureError:
    """Rebuild a `TenureError` from its wire shape (used by the client)."""
    body = payload.get("error", {})
    code = body.get("code", "internal")
    for cls in ERROR_CLASSES:
        if cls.code == code:
            return cls(body.get("message", code), details=body.get("details"))
    return TenureError(body.get("message", code), details=body.get("details"))
