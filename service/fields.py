"""Constrained field types shared by request Structs: validation lives in the type.

PostgreSQL cannot store a NUL character in text; every free-text type refuses it here, so it is
a 400 before any SQL runs (asyncpg would raise CharacterNotInRepertoireError, a 500).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec
from litestar.params import PathParameter, QueryParameter

# Patterns are written for both engines that read them: Python's re (msgspec applies them with
# re.search) and ECMA-262 (the OpenAPI document's clients). The whole string, with no NUL anywhere:
NO_NUL = r"^[^\x00]*$"
# No @, space or control character on either side of the @ (explicit ranges: \s differs between
# the two engines). Python's $ also matches before a final newline; (?!\n) refuses it there (a
# no-op in ECMA-262).
EMAIL_PATTERN = r"^[^@\x00-\x20\x7f]+@[^@\x00-\x20\x7f]+$(?!\n)"
MAX_ID = 2**63 - 1

Id = Annotated[int, msgspec.Meta(ge=1, le=MAX_ID, description="A 64-bit row id")]
# Path and query values declare their constraints on the parameter marker: Litestar reads them
# from there and ignores a msgspec.Meta nested inside.
PathId = Annotated[int, PathParameter(ge=1, le=MAX_ID, description="A 64-bit row id")]
Email = Annotated[
    str,
    msgspec.Meta(
        min_length=3,
        max_length=320,
        pattern=EMAIL_PATTERN,
        description="An email address; stored and compared lower-cased",
        examples=["ada@example.com"],
    ),
]
EmailQuery = Annotated[
    str, QueryParameter(min_length=3, max_length=320, pattern=EMAIL_PATTERN, description="An email address")
]
PersonName = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=NO_NUL, examples=["Ada Lovelace"])]

MAX_CONTENT = 100_000
MAX_TOPICS_PER_MESSAGE = 50
MAX_BATCH = 1000

Role = Literal["user", "assistant", "system", "tool"]
Title = Annotated[str, msgspec.Meta(max_length=500, pattern=NO_NUL, examples=["Trip to Lisbon"])]
Content = Annotated[
    str,
    msgspec.Meta(min_length=1, max_length=MAX_CONTENT, pattern=NO_NUL, description=f"1 to {MAX_CONTENT:,} characters"),
]
TopicName = Annotated[str, msgspec.Meta(min_length=1, max_length=100, pattern=NO_NUL, examples=["travel"])]
TopicNames = Annotated[list[TopicName], msgspec.Meta(max_length=MAX_TOPICS_PER_MESSAGE)]
ClientMsgId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=200,
        pattern=NO_NUL,
        description="The caller's idempotency key for this message, unique within the conversation",
    ),
]
MAX_METADATA_BYTES = 16 * 1024
MAX_TOKEN_COUNT = 2**31 - 1

Metadata = Annotated[
    dict[str, Any],
    msgspec.Meta(
        description=(
            f"Any JSON object, at most {MAX_METADATA_BYTES:,} bytes encoded, without NUL characters; "
            "stored as jsonb and returned as the same JSON value (jsonb does not keep key order or repeated keys)"
        ),
        examples=[{"model": "freya-large", "latency_ms": 812, "tools": ["search"]}],
    ),
]
TokenCount = Annotated[
    int,
    msgspec.Meta(
        ge=0,
        le=MAX_TOKEN_COUNT,
        description="Tokens the message costs in a prompt; when absent the service stores ceil(UTF-8 bytes / 4)",
        examples=[42],
    ),
]


def metadata_problem(metadata: dict[str, Any]) -> str | None:
    """Why a metadata object cannot be stored, or None. jsonb refuses NUL in strings (a 500 otherwise)."""
    if len(msgspec.json.encode(metadata)) > MAX_METADATA_BYTES:
        return f"is larger than {MAX_METADATA_BYTES:,} bytes encoded as JSON"
    pending: list[Any] = [metadata]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str) and "\x00" in value:
            return "must not contain a NUL character"
    return None


RoleQuery = Annotated[Role | None, QueryParameter(description="Only messages with this role")]
TimeQuery = Annotated[
    datetime | None, QueryParameter(description="RFC 3339 time; without an offset it is taken as UTC")
]
