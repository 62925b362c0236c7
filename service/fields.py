"""Constrained field types shared by request Structs: validation lives in the type.

PostgreSQL cannot store a NUL character in text; every free-text type refuses it here, so it is
a 400 before any SQL runs (asyncpg would raise CharacterNotInRepertoireError, a 500).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

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
RoleQuery = Annotated[Role | None, QueryParameter(description="Only messages with this role")]
TimeQuery = Annotated[
    datetime | None, QueryParameter(description="RFC 3339 time; without an offset it is taken as UTC")
]
