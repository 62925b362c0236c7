"""The error contract: every failure leaves as RFC 9457 problem details.

    exception                                          status  title
    ─────────────────────────────────────────────────  ──────  ────────────────────────────
    litestar ValidationException (body/query/path)     400     Invalid request
    RecursionError decoding a deeply nested JSON body  400     Invalid request
    Invalid (our own value checks)                     400/422 as raised, with ``errors``
    a body not UTF-8 / nested too deeply (JsonBodyRequest) 400 Invalid request (field ``body``)
    RequestTimeout (body not in within the read timeout) 408   Request timeout, Connection: close
    UnsupportedMediaType (a body not sent as JSON)     415     Unsupported media type
    NotFound                                           404     Not found
    Gone (a feed cursor before what is kept)           410     Gone
    litestar NotFound / MethodNotAllowed / 413 …       as is   Litestar's title
    Conflict, asyncpg UniqueViolationError             409     Conflict
    asyncpg ForeignKeyViolationError                   422     Referenced row does not exist (the field)
      … of a parent deleted under the request          404     Not found (the parent)
    asyncpg CheckViolation / NotNull / DataError       422     Value breaks a rule (the field)
    asyncpg QueryCanceledError (statement_timeout)     504     Database statement timed out
    asyncpg TransactionRollbackError (deadlock …)      503     Database conflict + Retry-After
    pool acquire TimeoutError                          503     Database busy   + Retry-After
    connection refused / lost / server shutting down   503     Database unavailable + Retry-After
    asyncpg InterfaceError / InternalClientError       503     Database unavailable + Retry-After
    anything else                                      500     Internal server error (logged)

Problem ``type`` values are URIs under ``PROBLEM_BASE`` so clients can switch on them. No
PostgreSQL message text reaches a client: constraint failures are explained by constraint name.
"""

from __future__ import annotations

import json
import logging
import math
import re
import sys
from collections.abc import Iterable
from typing import Any, ClassVar, Literal

import asyncpg
import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, SerializationException, ValidationException
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.types import ExceptionHandlersMap

from service.fields import EMAIL_PATTERN, NO_NUL
from service.observability import logged_method, request_id_of

log = logging.getLogger("freya.errors")

PROBLEM_BASE = "https://freya.dev/problems/"
MEDIA_TYPE = "application/problem+json"
RETRY_AFTER_SECONDS = "1"


class ProblemError(Exception):
    """A domain error with its HTTP status; raised by handlers, answered as problem details."""

    status = 500
    title = "Internal server error"
    kind = "internal"
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, detail: str, *, errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


# Where a field named in an error stands, as Litestar's own parameter errors say it.
Source = Literal["path", "query", "header", "body"]


class Invalid(ProblemError):
    status, title, kind = 400, "Invalid request", "invalid-request"

    def __init__(
        self,
        detail: str,
        *,
        field: str | None = None,
        source: Source | None = None,
        errors: list[dict[str, Any]] | None = None,
        status: int = 400,
    ) -> None:
        if errors is None and field is not None:
            errors = [{"field": field, "message": detail}]
        if source is not None and errors:
            errors = [{**error, "source": source} for error in errors]
        super().__init__(detail, errors=errors)
        self.status = status
        if status == 422:
            self.title, self.kind = "Unprocessable content", "unprocessable"


class NotFound(ProblemError):
    status, title, kind = 404, "Not found", "not-found"


class Conflict(ProblemError):
    status, title, kind = 409, "Conflict", "conflict"


class Gone(ProblemError):
    status, title, kind = 410, "Gone", "gone"


class RequestTimeout(ProblemError):
    status, title, kind = 408, "Request timeout", "request-timeout"
    # The rest of the body may still be on its way: the connection cannot be reused.
    headers: ClassVar[dict[str, str] | None] = {"Connection": "close"}


class UnsupportedMediaType(ProblemError):
    status, title, kind = 415, "Unsupported media type", "unsupported-media-type"


def problem(
    status: int,
    title: str,
    kind: str,
    detail: str,
    *,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
    request: Request[Any, Any, Any] | None = None,
) -> Response[dict[str, Any]]:
    """A problem-details response; with the request, its path as ``instance`` and its id echoed."""
    body: dict[str, Any] = {"type": PROBLEM_BASE + kind, "title": title, "status": status, "detail": detail}
    headers = dict(headers or {})
    if request is not None:
        body["instance"] = request.url.path
        # Errors raised before the request pipeline ran (routing, 405) still carry the id.
        headers["X-Request-ID"] = request_id_of(request.scope)
    if errors:
        body["errors"] = errors
    return Response(body, status_code=status, media_type=MEDIA_TYPE, headers=headers)


class JsonBodyRequest(Request[Any, Any, Any]):
    """Litestar's request, with the body-decoding failures msgspec does not report as such
    (bytes that are not UTF-8, nesting past its recursion limit) answered as the 400 they are,
    and a number out of range answered naming where it stands."""

    async def json(self) -> Any:
        try:
            return await super().json()
        except UnicodeDecodeError:
            raise Invalid("the body is not valid UTF-8", field="body", source="body") from None
        except RecursionError:
            raise Invalid("the body's JSON is nested too deeply", field="body", source="body") from None
        except SerializationException as error:
            if not str(error).startswith(("Number out of range", "Integer value out of range")):
                raise
            field = out_of_range_number(await self.body())
        raise Invalid(
            f"{field} is a number out of range: a float must be within about ±1.8e308, an integer "
            f"at most {sys.get_int_max_str_digits():,} digits long",
            field=field,
            source="body",
        )


# The largest body whose out-of-range number is looked for: the search parses it once more, in
# Python, on the event loop (about 25 ms for this much); beyond it the answer names the body.
LOCATE_NUMBERS_UP_TO = 256 * 1024


class _OutOfRange:
    """Stands in for a JSON number out of range while its place is looked for."""


def out_of_range_number(body: bytes) -> str:
    """Where the first number of ``body`` that no double holds (``1e999``), or that has more
    digits than Python converts, stands, as a field name (``metadata.n``,
    ``messages[2].metadata.x``); ``body`` when that cannot be told. msgspec says only
    ``$[...][1][...]``: it does not keep object keys on this path."""
    if len(body) > LOCATE_NUMBERS_UP_TO:
        return "body"
    marker = _OutOfRange()
    digits = sys.get_int_max_str_digits()

    def parse_float(text: str) -> Any:
        return marker if math.isinf(float(text)) else 0.0

    def parse_int(text: str) -> Any:
        return marker if len(text.lstrip("-")) > digits else 0

    def find(value: Any, path: str) -> str | None:
        if value is marker:
            return path or "body"
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            inner = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key
            if (found := find(item, inner)) is not None:
                return found
        return None

    try:
        return find(json.loads(body, parse_float=parse_float, parse_int=parse_int), "") or "body"
    except (ValueError, RecursionError):  # what msgspec refused for another reason as well
        return "body"


class FieldError(msgspec.Struct):
    field: str | None
    message: str
    source: Source | None = None


class ProblemDetails(msgspec.Struct):
    """RFC 9457 problem details, as every error of this API is answered (the OpenAPI shape)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = None


_RESPONSE_DESCRIPTIONS = {
    400: "Invalid request: the errors list names each offending field",
    401: "No valid service token (when FREYA_API_TOKENS is set)",
    403: "The token lacks the scope this request needs",
    404: "Not found",
    409: "Conflict with an existing row",
    410: "What the request points at was pruned and is gone for good",
    415: "The body is not sent as application/json",
    422: "Well-formed, but a value breaks a rule or references a missing row",
    503: "Database unavailable or busy; retry after Retry-After seconds",
    504: "Database statement timed out",
}


_EXAMPLES: dict[int, dict[str, Any]] = {
    400: {
        "type": PROBLEM_BASE + "invalid-request",
        "title": "Invalid request",
        "status": 400,
        "detail": "email: must be an email address (and contain no NUL character)",
        "instance": "/v1/users",
        "errors": [
            {"field": "email", "message": "must be an email address (and contain no NUL character)", "source": "body"}
        ],
    },
    401: {
        "type": PROBLEM_BASE + "unauthorized",
        "title": "Unauthorized",
        "status": 401,
        "detail": "a valid service token is required: Authorization: Bearer <token>",
        "instance": "/v1/users/1",
    },
    403: {
        "type": PROBLEM_BASE + "forbidden",
        "title": "Forbidden",
        "status": 403,
        "detail": "token 'reader' lacks the 'write' scope this request needs",
        "instance": "/v1/users",
    },
    404: {
        "type": PROBLEM_BASE + "not-found",
        "title": "Not found",
        "status": 404,
        "detail": "user 42 does not exist",
        "instance": "/v1/users/42",
    },
    409: {
        "type": PROBLEM_BASE + "conflict",
        "title": "Conflict",
        "status": 409,
        "detail": "a user with this email exists already",
        "instance": "/v1/users",
    },
    410: {
        "type": PROBLEM_BASE + "gone",
        "title": "Gone",
        "status": 410,
        "detail": "the cursor points before the oldest change kept (FREYA_CHANGES_RETENTION_DAYS); "
        "start again without a cursor and resynchronise",
        "instance": "/v1/changes",
    },
    415: {
        "type": PROBLEM_BASE + "unsupported-media-type",
        "title": "Unsupported media type",
        "status": 415,
        "detail": "Content-Type 'text/plain' is not supported: send application/json",
        "instance": "/v1/users",
    },
    422: {
        "type": PROBLEM_BASE + "missing-reference",
        "title": "Referenced row does not exist",
        "status": 422,
        "detail": "user_id names a row that does not exist",
        "instance": "/v1/conversations",
        "errors": [{"field": "user_id", "message": "does not exist", "source": "body"}],
    },
    503: {
        "type": PROBLEM_BASE + "database-unavailable",
        "title": "Database unavailable",
        "status": 503,
        "detail": "the database cannot be reached right now; retry shortly",
        "instance": "/v1/users/1",
    },
    504: {
        "type": PROBLEM_BASE + "database-timeout",
        "title": "Database statement timed out",
        "status": 504,
        "detail": "the database did not answer within the statement timeout",
        "instance": "/v1/search/messages",
    },
}


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problem responses a route can return (auth and database ones always can)."""
    return {
        status: ResponseSpec(
            data_container=ProblemDetails,
            description=_RESPONSE_DESCRIPTIONS[status],
            media_type=MEDIA_TYPE,
            generate_examples=False,
            examples=[Example(summary=_RESPONSE_DESCRIPTIONS[status], value=_EXAMPLES[status])],
        )
        for status in (*statuses, 401, 403, 503, 504)
    }


_NAMED_IN_MESSAGE = re.compile(r"^Object (?:contains unknown|missing required) field `(?P<name>[^`]+)`$")
_MISSING_PARAMETER = re.compile(r"^Missing required (?P<source>\w+) parameter '(?P<name>[^']+)'")
_REGEX_MESSAGE = re.compile(r"^Expected `str` matching regex '(?P<pattern>.*)'$")


def _explain(message: str) -> str:
    """msgspec's regex messages show the pattern; say what the rule means instead."""
    match = _REGEX_MESSAGE.match(message)
    if match is None:
        return message
    return _PATTERN_MEANINGS.get(match.group("pattern").replace("\\\\", "\\"), "has an invalid format")


def _field_error(item: dict[str, Any]) -> dict[str, Any]:
    message = str(item.get("message", ""))
    key = item.get("key")
    if key == "data" and message == "'data'":  # Litestar's KeyError text when there is no body at all
        return {"field": "body", "message": "is required: a JSON object", "source": "body"}
    field = None if key in (None, "data") else str(key).removeprefix("$.")
    # msgspec names a nested path at the end of the message: "... - at `$.messages[3].content`".
    if " - at `$" in message:
        message, _, path = message.rpartition(" - at `$")
        field = path.rstrip("`").lstrip(".")
    # For unknown or missing fields the name is in the message, the key is only the parent.
    if named := _NAMED_IN_MESSAGE.match(message):
        field = f"{field}.{named.group('name')}" if field else named.group("name")
    entry: dict[str, Any] = {"field": field, "message": _explain(message)}
    if item.get("source"):
        entry["source"] = item["source"]
    return entry


def on_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    extra = exc.extra if isinstance(exc.extra, list) else []
    errors = [_field_error(item) for item in extra if isinstance(item, dict)]
    if not errors and (missing := _MISSING_PARAMETER.match(str(exc.detail))):
        errors = [{"field": missing.group("name"), "message": "is required", "source": missing.group("source")}]
    detail = "; ".join(f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in errors)
    return problem(400, "Invalid request", "invalid-request", detail or str(exc.detail), errors=errors, request=request)


def allow_header(methods: Iterable[str]) -> str:
    """An Allow header's value: the methods, sorted, and HEAD wherever GET is (app.FreyaApp
    answers a HEAD as its GET, which Litestar's own lists do not know)."""
    allowed = set(methods)
    if "GET" in allowed:
        allowed.add("HEAD")
    return ", ".join(sorted(allowed))


def on_http_exception(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    if status >= 500:
        log.error("%s %s failed", logged_method(request.scope), request.url.path, exc_info=exc)
    title = _STATUS_TITLES.get(status, "Error")
    headers = dict(exc.headers or {})
    for name in [name for name in headers if name.lower() == "allow"]:  # a 405's (the router spells it allow)
        headers["Allow"] = allow_header(method.strip() for method in headers.pop(name).split(","))
    return problem(status, title, title.lower().replace(" ", "-"), str(exc.detail), headers=headers, request=request)


def on_problem(request: Request[Any, Any, Any], exc: ProblemError) -> Response[dict[str, Any]]:
    return problem(exc.status, exc.title, exc.kind, exc.detail, errors=exc.errors, headers=exc.headers, request=request)


# What a broken constraint means to the client, by constraint name: PostgreSQL's own message
# (table and constraint names, key values) never reaches a client.
_MISSING_PARENT = {  # a row that vanished under the request (a concurrent DELETE): 404
    "messages_conversation_id_fkey": "the conversation does not exist",
    "message_topics_message_id_fkey": "the message does not exist",
    "message_topics_topic_id_fkey": "a topic was deleted while it was being assigned",
}
_MISSING_REFERENCE = {  # a field naming a row that does not exist: 422 naming the field
    "conversations_user_id_fkey": "user_id",
    "messages_user_id_fkey": "user_id",
}
_RULE_FIELDS = {
    "users_email_check": "email",
    "users_name_check": "name",
    "conversations_title_check": "title",
    "topics_name_check": "name",
    "messages_role_check": "role",
    "messages_client_msg_id_length": "client_msg_id",
}


def on_unique_violation(request: Request[Any, Any, Any], exc: asyncpg.UniqueViolationError) -> Response[dict[str, Any]]:
    return problem(409, "Conflict", "conflict", _unique_detail(exc), request=request)


def on_missing_reference(
    request: Request[Any, Any, Any], exc: asyncpg.ForeignKeyViolationError
) -> Response[dict[str, Any]]:
    constraint = getattr(exc, "constraint_name", None) or ""
    if constraint in _MISSING_PARENT:
        return problem(404, "Not found", "not-found", _MISSING_PARENT[constraint], request=request)
    field = _MISSING_REFERENCE.get(constraint)
    detail = f"{field} names a row that does not exist" if field else "a referenced row does not exist"
    errors = [{"field": field, "message": "does not exist", "source": "body"}] if field else None
    return problem(422, "Referenced row does not exist", "missing-reference", detail, errors=errors, request=request)


def on_rule_broken(request: Request[Any, Any, Any], exc: asyncpg.PostgresError) -> Response[dict[str, Any]]:
    field = _RULE_FIELDS.get(getattr(exc, "constraint_name", None) or "")
    detail = f"{field} breaks a rule of the stored data" if field else "a value is out of the range the data allows"
    errors = [{"field": field, "message": "breaks a rule of the stored data", "source": "body"}] if field else None
    return problem(422, "Value breaks a rule", "constraint-violation", detail, errors=errors, request=request)


def on_rolled_back(request: Request[Any, Any, Any], exc: asyncpg.TransactionRollbackError) -> Response[dict[str, Any]]:
    # A deadlock or serialization failure that outlived the retries: the change was rolled back.
    return problem(
        503,
        "Database conflict",
        "database-conflict",
        "the change collided with a concurrent one and was rolled back; retry it",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
        request=request,
    )


def on_statement_timeout(request: Request[Any, Any, Any], exc: asyncpg.QueryCanceledError) -> Response[dict[str, Any]]:
    return problem(
        504,
        "Database statement timed out",
        "database-timeout",
        "the database did not answer within the statement timeout",
        request=request,
    )


def unavailable(request: Request[Any, Any, Any], exc: BaseException) -> Response[dict[str, Any]]:
    log.warning("database unavailable: %s: %s", type(exc).__name__, exc)
    return problem(
        503,
        "Database unavailable",
        "database-unavailable",
        "the database cannot be reached right now; retry shortly",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
        request=request,
    )


def busy(request: Request[Any, Any, Any], exc: TimeoutError) -> Response[dict[str, Any]]:
    return problem(
        503,
        "Database busy",
        "database-busy",
        "no database connection came free within the acquire timeout",
        headers={"Retry-After": RETRY_AFTER_SECONDS},
        request=request,
    )


def on_deep_nesting(request: Request[Any, Any, Any], exc: RecursionError) -> Response[dict[str, Any]]:
    """msgspec gives up on JSON nested deeper than Python's recursion limit (metadata is free-form
    JSON): the request's fault, a 400. Any other RecursionError is ours, a 500."""
    if "deserializing" not in str(exc):
        return on_unexpected(request, exc)
    detail = "the JSON body is nested too deeply"
    errors = [{"field": "body", "message": detail, "source": "body"}]
    return problem(400, "Invalid request", "invalid-request", detail, errors=errors, request=request)


def on_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.exception("unhandled error on %s %s", logged_method(request.scope), request.url.path, exc_info=exc)
    return problem(
        500,
        "Internal server error",
        "internal",
        "an unexpected error occurred; it has been logged",
        request=request,
    )


def _unique_detail(exc: asyncpg.UniqueViolationError) -> str:
    constraint = getattr(exc, "constraint_name", None)
    return _UNIQUE_MESSAGES.get(constraint or "", "a row with this value exists already")


_PATTERN_MEANINGS = {
    NO_NUL: "must not contain a NUL character",
    EMAIL_PATTERN: "must be an email address (and contain no NUL character)",
}

_UNIQUE_MESSAGES = {
    "idx_user_email": "a user with this email exists already",
    "idx_topic_name": "a topic with this name exists already",
}

_STATUS_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    413: "Content too large",
    415: "Unsupported media type",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}

EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    ValidationException: on_validation_error,
    ProblemError: on_problem,
    HTTPException: on_http_exception,
    # Litestar picks the handler of the closest class in the exception's MRO.
    asyncpg.UniqueViolationError: on_unique_violation,
    asyncpg.ForeignKeyViolationError: on_missing_reference,
    asyncpg.IntegrityConstraintViolationError: on_rule_broken,
    asyncpg.DataError: on_rule_broken,
    asyncpg.TransactionRollbackError: on_rolled_back,
    asyncpg.QueryCanceledError: on_statement_timeout,
    asyncpg.CannotConnectNowError: unavailable,
    asyncpg.AdminShutdownError: unavailable,
    asyncpg.PostgresConnectionError: unavailable,
    asyncpg.ConnectionDoesNotExistError: unavailable,
    # A pooled connection PostgreSQL closed (terminated, crashed) that asyncpg had not noticed:
    # discarded by db.PoolDatabase, and retried once when nothing had been sent.
    asyncpg.InterfaceError: unavailable,
    # …but an argument asyncpg cannot encode is the value's fault, not the connection's.
    asyncpg.exceptions._base.DataError: on_rule_broken,
    asyncpg.InternalClientError: unavailable,
    ConnectionError: unavailable,
    OSError: unavailable,
    TimeoutError: busy,
    RecursionError: on_deep_nesting,
    Exception: on_unexpected,
}
