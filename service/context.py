"""The context window: the newest messages of a conversation that fit a token budget, as a prompt needs them."""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.openapi import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import QueryParameter

from service.db import Database
from service.errors import Invalid, NotFound, problem_responses
from service.fields import PathId, RoleQuery
from service.messages import FieldsQuery, Message, parse_fields
from service.queries import Query, QueryFile

MAX_CONTEXT_TOKENS = 1_000_000


class ContextQueries(QueryFile, file="context"):
    plan_for_this_conversation: Query
    context_window: Query


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
        params: dict[str, Any] = {"max_tokens": max_tokens, "include_system": include_system, "role": role}
        async with db.connection() as conn, conn.transaction(readonly=True):
            await sql.plan_for_this_conversation.val(conn)
            rows = await shape.query(sql.context_window).records(conn, conversation_id=conversation_id, **params)
            if not rows:
                raise NotFound(f"conversation {conversation_id} does not exist")
            # Every row carries the totals (a lone row with a NULL sort_id: no messages to show).
            system_tokens, truncated = rows[0]["system_tokens"], rows[0]["truncated"]
            if system_tokens > max_tokens:
                raise Invalid(
                    f"the conversation's system messages alone take {system_tokens:,} tokens, more than "
                    f"max_tokens={max_tokens:,}; raise max_tokens or ask with include_system=false",
                    field="max_tokens",
                    status=422,
                )
            if rows[0]["sort_id"] is None:
                rows = []
            items = await shape.build(conn, db.topics, rows, "sort_id")
        # tokens is selected outside the fields= list: the total does not depend on the fields chosen.
        return ContextWindow(items=items, total_tokens=sum(row["tokens"] for row in rows), truncated=truncated)
