"""The one place domain errors become HTTP statuses, as RFC 9457 problem details
(`application/problem+json`) naming the field, what was expected and what was found.

    InputError (EventError, UnknownPurposeError, IdempotencyConflict)  422
    PolicyError                                  422, with every problem listed
    request validation (FastAPI/Pydantic)         422, with every error listed
    a body that is not sent as JSON               415
    Unauthenticated                               401 + WWW-Authenticate: Bearer
    Forbidden                                     403
    NotFound / unknown route                      404 (405 for a wrong method)
    RateLimited                                   429 + Retry-After
    StorageError, a database driver error         503
    anything else                                 500, without details
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException

from consentgate.domain.errors import InputError, PolicyError, StorageError

__all__ = ["Forbidden", "NotFound", "RateLimited", "Unauthenticated", "install", "problem"]

MEDIA_TYPE = "application/problem+json"
log = logging.getLogger("consentgate.api")


class ApiProblem(Exception):
    status = 500
    title = "Error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unauthenticated(ApiProblem):
    status, title = 401, "Unauthenticated"


class Forbidden(ApiProblem):
    status, title = 403, "Forbidden"


class NotFound(ApiProblem):
    status, title = 404, "Not found"


class RateLimited(ApiProblem):
    status, title = 429, "Too many requests"

    def __init__(self, retry_after: str) -> None:
        super().__init__(f"rate limit reached; retry after {retry_after} s")
        self.retry_after = retry_after


FOUND_MAX = 200  # characters of a found value echoed back


def _safe(value: object) -> Any:
    """A JSON value for `found`: scalars as they are, anything else as its repr;
    long text cut to FOUND_MAX characters."""
    if value is None or isinstance(value, (int, bool)):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    text = value if isinstance(value, str) else repr(value)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # e.g. a lone surrogate: show it escaped
        text = ascii(text)
    return text if len(text) <= FOUND_MAX else text[:FOUND_MAX] + "…"


def problem(
    status: int,
    title: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _input_error(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, InputError)
    extra = {"field": err.field, "expected": err.expected, "found": _safe(err.found)}
    if err.where:
        extra["where"] = err.where
    return problem(422, "Invalid input", str(err), **extra)


def _policy_error(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, PolicyError)
    return problem(422, "Invalid policy", str(err), field="toml", problems=err.problems)


def _described(e: Mapping[str, Any]) -> dict[str, Any]:
    """One Pydantic error as field / expected / found, in this API's words."""
    loc = [str(part) for part in e.get("loc", ())]
    kind = e.get("type", "")
    if kind == "json_invalid":  # loc ends with the character offset, not a field
        where = loc[-1] if len(loc) > 1 else "?"
        reason = e.get("ctx", {}).get("error", "invalid JSON")
        return {"field": "body", "expected": f"valid JSON ({reason} at character {where})",
                "found": None}  # fmt: skip
    found = None if kind == "missing" else _safe(e.get("input"))
    return {"field": ".".join(loc), "expected": e.get("msg", ""), "found": found}


def _validation_error(request: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, RequestValidationError)
    errors = [_described(e) for e in err.errors()]
    body_error = any(e["field"].startswith("body") for e in errors)
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body_error and media != "application/json":
        return problem(
            415,
            "Unsupported media type",
            f"send the body as JSON with `Content-Type: application/json`, found {media!r}",
            field="Content-Type",
            expected="application/json",
            found=media or None,
        )
    first = errors[0] if errors else {"field": "", "expected": "", "found": None}
    detail = f"field {first['field']!r}: {first['expected']}, found {first['found']!r}"
    return problem(422, "Invalid request", detail, **first, errors=errors)


def _api_problem(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, ApiProblem)
    headers = None
    if isinstance(err, Unauthenticated):
        headers = {"WWW-Authenticate": "Bearer"}
    elif isinstance(err, RateLimited):
        headers = {"Retry-After": err.retry_after}
    return problem(err.status, err.title, err.detail, headers)


def _http_error(_: Request, err: Exception) -> JSONResponse:
    assert isinstance(err, HTTPException)
    titles = {404: "Not found", 405: "Method not allowed"}
    detail = err.detail if isinstance(err.detail, str) else "request refused"
    return problem(err.status_code, titles.get(err.status_code, "Error"), detail, err.headers)


def _storage_error(_: Request, err: Exception) -> JSONResponse:
    log.error("storage error: %s", err)
    return problem(503, "Storage unavailable", str(err))


def _database_error(_: Request, err: Exception) -> JSONResponse:
    log.error("database error: %s", err)
    return problem(503, "Storage unavailable", "the database failed; try again later")


def _unexpected(_: Request, err: Exception) -> JSONResponse:
    log.exception("unexpected error", exc_info=err)
    return problem(500, "Internal error", "the server failed; the error is logged")


def install(app: FastAPI) -> None:
    app.add_exception_handler(InputError, _input_error)
    app.add_exception_handler(PolicyError, _policy_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(StorageError, _storage_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected)
