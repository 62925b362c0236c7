"""The context window: the newest messages of a conversation that fit a token budget, as a prompt needs them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import asyncpg
import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import QueryParameter

from service import messages
from service.db import Connection, Database
from service.errors import Invalid, NotFound, problem_responses
from service.fields import PathId, Role, RoleQuery
from service.messages import FieldsQuery, Message, Shape, page_position, parse_fields, time_key
from service.pages import rows_under_parent
from service.queries import Query, QueryFile

MAX_CONTEXT_TOKENS = 1_000_000


class ContextQueries(QueryFile, file="context"):
    system_messages: Query


sql = ContextQueries()

MaxTokens = Annotated[
    int,
    QueryParameter(
        ge=1,
        le=MAX_CONTEXT_TOKENS,
        description=f"The budget: the answer's token_count sum is at most this (1-{MAX_CONTEXT_TOKENS:,})",
        examples=[Example(summary="A 4,000-token prompt", value=4000)],
    ),
]
IncludeSystem = Annotated[
    bool,
    QueryParameter(
        description="true (default): the conversation's system messages come first whatever their age, "
        "counted in the budget"
    ),
]


class ContextWindow(msgspec.Struct):
    # Oldest first (system messages, when included, before all others).
    items: list[Message]
    # The sum of the items' token_count.
    total_tokens: int
    # True when older messages were left out to stay within max_tokens.
    truncated: bool


_EXAMPLE: dict[str, Any] = {
    "items": [
        {
            "id": 1,
            "conversation_id": 7,
            "user_id": 3,
            "role": "system",
            "content": "You are Freya, a travel assistant.",
            "timestamp": "2026-03-01T09:00:00Z",
            "edited_at": None,
            "metadata": {},
            "token_count": 9,
            "token_count_estimated": True,
            "topics": [],
        },
        {
            "id": 958,
            "conversation_id": 7,
            "user_id": 3,
            "role": "user",
            "content": "And the morning one?",
            "timestamp": "2026-03-04T18:21:07.118Z",
            "edited_at": None,
            "metadata": {"client": "ios"},
            "token_count": 6,
            "token_count_estimated": False,
            "topics": [],
        },
        {
            "id": 959,
            "conversation_id": 7,
            "user_id": 2,
            "role": "assistant",
            "content": "It leaves at 9:40 from LHR.",
            "timestamp": "2026-03-04T18:21:09.502Z",
            "edited_at": None,
            "metadata": {"model": "freya-large"},
            "token_count": 11,
            "token_count_estimated": False,
            "topics": [{"id": 4, "name": "flights"}],
        },
    ],
    "total_tokens": 26,
    "truncated": True,
}
_ANSWERS = {
    200: ResponseSpec(
        data_container=ContextWindow,
        description="The window, oldest first (system messages first)",
        examples=[Example(summary="A system prompt and the newest turns that fit", value=_EXAMPLE)],
    ),
    **problem_responses(400, 404, 422),
}


class ContextController(Controller):
    path = "/v1/conversations/{conversation_id:str}/context"
    tags = ("messages",)

    @get(
        summary="The newest messages that fit a token budget, oldest first",
        description=(
            "Whole messages only: newest first until the next one would pass max_tokens, answered oldest "
            "first. With include_system (default) the conversation's system messages come first whatever "
            "their age, counted in the budget; 422 when they alone exceed it. role= filters the others."
        ),
        responses=_ANSWERS,
    )
    async def context_window(
        self,
        conversation_id: PathId,
        max_tokens: MaxTokens,
        db: NamedDependency[Database],
        include_system: IncludeSystem = True,
        role: RoleQuery = None,
        fields: FieldsQuery = None,
    ) -> ContextWindow:
        shape = parse_fields(fields)
        async with db.connection() as conn:
            window = await read_window(
                conn, shape, conversation_id, max_tokens, include_system=include_system, role=role
            )
            if window is None:
                raise NotFound(f"conversation {conversation_id} does not exist")
            rows, tokens, truncated = window
            items = await shape.build(conn, db.topics, rows, "sort_id")
        return ContextWindow(items=items, total_tokens=tokens, truncated=truncated)


# PostgreSQL cannot stop a scan at a running sum (a window's run condition stops row_number() or
# count(), not sum()), so the window reads the newest messages a chunk at a time, each a keyset
# page (the statement a conversation's page runs, with each row's token count and role), and
# Python sums them: PostgreSQL reads about the rows it answers, with no second fetch of them and
# no plan of its own. A chunk too short costs one more statement, which costs PostgreSQL about
# what 80 rows do; one too long reads rows nobody gets. So a chunk is sized for the tokens left at
# the tokens a message seen so far, and a tenth more; the first, at what recent windows saw.
_READ_LEAST, _READ_MOST = 16, 1_000
# Conversations have a system prompt or a few: one chunk, usually of one row.
_SYSTEM_READ = 16


def _rows_for(tokens: int, tokens_each: float) -> int:
    """How many messages to read for ``tokens`` more at ``tokens_each`` a message."""
    return min(_READ_MOST, max(_READ_LEAST, math.ceil(tokens / max(tokens_each, 1.0) * 1.1)))


class _Pace:
    """Tokens a message, as this process's recent windows found them (a moving average, starting
    from a guess): what a window's first chunk is sized by."""

    __slots__ = ("tokens_each",)

    def __init__(self) -> None:
        self.tokens_each = 64.0

    def saw(self, tokens: int, messages: int) -> None:
        if messages:
            self.tokens_each += (tokens / messages - self.tokens_each) / 4


_PACE = _Pace()


@dataclass(slots=True)
class _Fitted:
    rows: list[asyncpg.Record]
    tokens: int
    # The tokens with the first row that did not fit (None: every row fitted, to the end).
    overflow: int | None


async def _fit(
    conn: Connection,
    query: Query,
    params: dict[str, Any],
    order: Literal["desc", "asc"],
    budget: int,
    first_read: int,
    *,
    skip_system: bool,
) -> _Fitted | None:
    """``query``'s rows walking ``order`` by time, read a chunk at a time from after the previous
    chunk's last row, while their token counts sum to at most ``budget``; ``skip_system``
    passes system messages over (a window with include_system has them already). None: no such
    conversation."""
    rows: list[asyncpg.Record] = []
    tokens = 0
    position = page_position(order, None)
    read = first_read
    while True:
        found = rows_under_parent(await query.records(conn, **params, **position, limit=read), "sort_id")
        if found is None:
            return None
        for row in found:
            if skip_system and row["window_role"] == "system":
                continue
            if tokens + row["window_tokens"] > budget:
                return _Fitted(rows, tokens, tokens + row["window_tokens"])
            tokens += row["window_tokens"]
            rows.append(row)
        if len(found) <= read:  # not the one row past the chunk: the conversation ends here
            return _Fitted(rows, tokens, None)
        position = page_position(order, time_key(found[-1]))
        read = _rows_for(budget - tokens, tokens / len(rows) if rows else _PACE.tokens_each)


async def read_window(
    conn: Connection, shape: Shape, conversation_id: int, max_tokens: int, *, include_system: bool, role: Role | None
) -> tuple[list[asyncpg.Record], int, bool] | None:
    """The window's rows in the answer's order (``shape``'s, as a page's rows), their tokens, and
    whether older messages were left out; None: no such conversation. Each chunk is a statement of
    its own: a window posted to meanwhile is the one its first chunk saw (the next chunks read
    older messages only)."""
    system: list[asyncpg.Record] = []
    system_tokens = 0
    if include_system:
        found = await _fit(
            conn,
            shape.query(sql.system_messages, window=True),
            {"conversation_id": conversation_id},
            "asc",
            max_tokens,
            _SYSTEM_READ,
            skip_system=False,
        )
        if found is None:
            return None
        if found.overflow is not None:
            raise Invalid(
                f"the conversation's system messages alone take more than max_tokens={max_tokens:,} "
                f"(at least {found.overflow:,} tokens); raise max_tokens or ask with include_system=false",
                field="max_tokens",
                source="query",
                status=422,
            )
        system, system_tokens = found.rows, found.tokens
        if role == "system":  # every message the walk could take is in the system part already
            return system, system_tokens, False
    left = max_tokens - system_tokens
    walked = await _fit(
        conn,
        shape.query(messages.sql.list_messages_newest_first, window=True),
        {"conversation_id": conversation_id, "role": role, "since": None, "until": None, "offset": 0},
        "desc",
        left,
        _rows_for(left, _PACE.tokens_each),
        skip_system=include_system,
    )
    if walked is None:
        return None
    _PACE.saw(walked.tokens, len(walked.rows))
    return [*system, *walked.rows[::-1]], system_tokens + walked.tokens, walked.overflow is not None
