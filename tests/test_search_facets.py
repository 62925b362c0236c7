"""Search: exact quoted phrases (stop words included) and facet counts over all matches."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from service.search import index_query, phrase_patterns
from tests.api import all_pages, assert_problem, create_conversation, create_user, post_batch

SEARCH = "/v1/search/messages"


@pytest.fixture
async def harbor(client: httpx.AsyncClient) -> dict[str, int]:
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    texts = {
        "flew": "The zeppelin flew over the harbor",
        "scrambled": "harbor harbor meadow and then we went over",
        "upper": "OVER, THE HARBOR!",
        "split": "over the old harbor",
        "reversed": "the harbor over there",
        "prefix": "moreover the harbormaster waved",
    }
    items = await post_batch(client, conversation["id"], [{"role": "user", "content": t} for t in texts.values()])
    return {name: item["message"]["id"] for name, item in zip(texts, items, strict=True)}


async def ids(client: httpx.AsyncClient, q: str, **params: Any) -> set[int]:
    return {hit["id"] for hit in await all_pages(client, SEARCH, q=q, limit=2, **params)}


async def test_a_phrase_keeps_its_stop_words_and_order(client: httpx.AsyncClient, harbor: dict[str, int]) -> None:
    assert await ids(client, '"over the harbor"') == {harbor["flew"], harbor["upper"]}
    assert await ids(client, '"over the harbor"', sort="recent") == {harbor["flew"], harbor["upper"]}
    # The words alone still find every message with "harbor" (stemmed, stop words ignored).
    assert await ids(client, "over the harbor") == set(harbor.values()) - {harbor["prefix"]}
    assert await ids(client, 'zeppelin "over the harbor"') == {harbor["flew"]}
    assert await ids(client, '"harbor meadow" "we went"') == {harbor["scrambled"]}
    assert await ids(client, '"the harbor" "we went"') == set()
    # Negated, a phrase excludes only the messages holding it (the tsquery alone would drop every
    # message with "harbor"); a query of exclusions only is PostgreSQL's (no "harbor" at all).
    assert await ids(client, 'harbor -"over the harbor"') == {harbor["scrambled"], harbor["split"], harbor["reversed"]}
    assert await ids(client, '-"over the harbor"') == {harbor["prefix"]}
    # Beside `or`, a phrase keeps websearch_to_tsquery's meaning.
    assert await ids(client, '"over the harbor" or meadow') == set(harbor.values()) - {harbor["prefix"]}


def test_phrase_patterns_are_built_from_words_only() -> None:
    assert phrase_patterns('"over the harbor"') == [r"\mover\M\W+\mthe\M\W+\mharbor\M"]
    mixed = 'x "a.*b" -"c d" "e f" or g "unclosed h'
    assert phrase_patterns(mixed) == [r"\ma\M\W+\mb\M", r"^(?!.*\mc\M\W+\md\M)", r"\munclosed\M\W+\mh\M"]
    assert index_query(mixed) == 'x "a.*b" "e f" or g "unclosed h'
    assert phrase_patterns('"" "(*)" plain words') == []
    assert index_query('-"c d"') == '-"c d"'
    assert (phrase_patterns('a or -"b c"'), index_query('a or -"b c"')) == ([], 'a or -"b c"')


async def test_facets_count_every_match_the_same_on_every_page(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    messages = [
        {"role": "user" if n % 3 else "assistant", "content": f"lisbon note {n}", "topics": [f"t{n % 4}", "all"]}
        for n in range(30)
    ] + [{"role": "tool", "content": "porto only", "topics": ["all"]}]
    await post_batch(client, conversation["id"], messages)
    first = (await client.get(SEARCH, params={"q": "lisbon", "limit": 4, "facets": "topic,role"})).json()
    assert len(first["items"]) == 4
    assert first["facets"] == {
        "topic": [
            {"value": "all", "count": 30},
            {"value": "t0", "count": 8},
            {"value": "t1", "count": 8},
            {"value": "t2", "count": 7},
            {"value": "t3", "count": 7},
        ],
        "role": [{"value": "user", "count": 20}, {"value": "assistant", "count": 10}],
    }
    second = (
        await client.get(
            SEARCH, params={"q": "lisbon", "limit": 4, "facets": "topic,role", "cursor": first["next_cursor"]}
        )
    ).json()
    assert second["facets"] == first["facets"]
    assert {h["id"] for h in second["items"]}.isdisjoint(h["id"] for h in first["items"])
    only_roles = (await client.get(SEARCH, params={"q": "lisbon", "role": "assistant", "facets": "role"})).json()
    assert only_roles["facets"] == {"role": [{"value": "assistant", "count": 10}]}
    plain = (await client.get(SEARCH, params={"q": "lisbon"})).json()
    assert "facets" not in plain
    assert_problem(await client.get(SEARCH, params={"q": "lisbon", "facets": "topic,colour"}), 400, "facets")


async def test_topic_facets_are_the_20_most_frequent_then_by_name(client: httpx.AsyncClient) -> None:
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    # Topic k is on k + 1 messages for k < 5; 25 topics are on one message each.
    messages = [
        {"role": "user", "content": "zebra", "topics": [f"busy{k}" for k in range(5) if n <= k]} for n in range(5)
    ]
    messages += [{"role": "user", "content": "zebra", "topics": [f"once{k:02}"]} for k in range(25)]
    await post_batch(client, conversation["id"], messages)
    facets = (await client.get(SEARCH, params={"q": "zebra", "facets": "topic"})).json()["facets"]
    expected = [{"value": f"busy{k}", "count": k + 1} for k in reversed(range(5))]
    expected += [{"value": f"once{k:02}", "count": 1} for k in range(15)]
    assert facets == {"topic": expected}


async def test_facets_follow_the_phrase_and_filters(client: httpx.AsyncClient, harbor: dict[str, int]) -> None:
    facets = (await client.get(SEARCH, params={"q": '"over the harbor"', "facets": "role"})).json()["facets"]
    assert facets == {"role": [{"value": "user", "count": 2}]}
