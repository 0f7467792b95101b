"""The gateway's exception tree. Stores and pure modules raise these; the HTTP middleware in
``server`` turns each into a status and a JSON body ``{"error": {"code", "message"}, ...extra}``,
once, at the boundary. Lower-layer errors (sqlite3, asyncpg, OSError) are mapped with
``raise ... from exc`` where they can mean something to a client; anything else is a 500.

    GatewayError                      (500 internal)
    ├── BadRequest                    400 (code names the problem: unknown_filter, bad_cursor, ...)
    ├── Unauthorized                  401
    ├── NotFound                      404
    ├── Conflict                      409 (code: offset_mismatch, log_finalized, name_conflict)
    │   └── ChecksumMismatch          409 (finalize: size or sha256 differ from the stored bytes)
    ├── PayloadTooLarge               413
    ├── RangeNotSatisfiable           416
    ├── TooManyRequests               429 (too many failed authentications from one address:
    │                                      retry after Retry-After)
    └── Unavailable                   503 (database or disk unavailable, shutting down, and
                                           upload_in_progress: retry after Retry-After)
"""

from __future__ import annotations

from typing import Any


class GatewayError(Exception):
    status = 500
    code = "internal"

    def __init__(
        self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None, **extra: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        #: Extra response headers (Retry-After, Content-Range, WWW-Authenticate).
        self.headers = headers or {}
        #: Extra top-level members of the JSON error body (e.g. ``size`` on a 409).
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message}, **self.extra}


class BadRequest(GatewayError):
    status = 400
    code = "bad_request"


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"


class Forbidden(GatewayError):
    """The token is valid but lacks the scope (write on a namespace). Reads of records in
    namespaces a token may not read answer 404 instead (``NotFound``), so they do not reveal that
    a record exists."""

    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class ChecksumMismatch(Conflict):
    code = "checksum_mismatch"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "payload_too_large"


class RangeNotSatisfiable(GatewayError):
    status = 416
    code = "range_not_satisfiable"


class TooManyRequests(GatewayError):
    status = 429
    code = "too_many_requests"


class Unavailable(GatewayError):
    status = 503
    code = "unavailable"
