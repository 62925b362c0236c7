"""Anchored pages (around=) and paging a conversation both ways with prev_cursor and next_cursor."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api import all_pages, assert_problem, create_conversation, create_user, post_batch


@pytest.fixture
async def chat(client: httpx.AsyncClient) -> dict[str, Any]:
    """21 messages over three batches (ties inside each), alternating user and assistant."""
    user = await create_user(client)
    conversation = await create_conversation(client, user["id"])
    ids: list[int] = []
    for first, size in ((0, 7), (7, 9), (16, 5)):
        items = await post_batch(
            client,
            conversation["id"],
            [{"role": ("user", "assistant")[n % 2], "content": f"m{n}"} for n in range(first, first + size)],
        )
        ids += [item["message"]["id"] for item in items]
    return {"id": conversation["id"], "path": f"/v1/conversations/{conversation['id']}/messages", "ids": ids}


async def get(client: httpx.AsyncClient, path: str, **params: Any) -> dict[str, Any]:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids_of(page: dict[str, Any]) -> list[int]:
    return [item["id"] for item in page["items"]]


async def test_a_page_centred_on_a_message(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    ids = chat["ids"]
    newest_first = ids[::-1]
    page = await get(client, chat["path"], around=ids[10], limit=5)
    assert ids_of(page) == [ids[12], ids[11], ids[10], ids[9], ids[8]]
    assert page["next_cursor"]
    assert page["prev_cursor"]
    # An even limit: the extra one goes after the anchor, in the list's order.
    assert ids_of(await get(client, chat["path"], around=ids[10], limit=4)) == [ids[11], ids[10], ids[9], ids[8]]
    oldest_first = await get(client, chat["path"], around=ids[10], limit=5, order="asc")
    assert ids_of(oldest_first) == ids[8:13]
    # Near an end the other side fills in; nothing before the newest message.
    at_top = await get(client, chat["path"], around=ids[-1], limit=5)
    assert (ids_of(at_top), at_top["prev_cursor"]) == (newest_first[:5], None)
    near_bottom = await get(client, chat["path"], around=ids[1], limit=6)
    assert (ids_of(near_bottom), near_bottom["next_cursor"]) == (newest_first[-6:], None)
    everything = await get(client, chat["path"], around=ids[3], limit=50)
    assert (ids_of(everything), everything["prev_cursor"], everything["next_cursor"]) == (newest_first, None, None)
    alone = await get(client, chat["path"], around=ids[3], limit=1)
    assert ids_of(alone) == [ids[3]]
    fields = await get(client, chat["path"], around=ids[3], limit=3, fields="content")
    assert fields["items"] == [{"content": "m4"}, {"content": "m3"}, {"content": "m2"}]


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize(("limit", "role"), [(2, None), (5, None), (8, None), (5, "user")])
async def test_every_anchor_centres_its_page_and_the_short_side_is_filled(
    client: httpx.AsyncClient, chat: dict[str, Any], order: str, limit: int, role: str | None
) -> None:
    """Each side is read half a page deep; where one runs short the other reads on (a second
    statement), so every anchor, from either end to the middle, gives the page the list implies."""
    filters = {"order": order, **({"role": role} if role else {})}
    listed = [item["id"] for item in await all_pages(client, chat["path"], limit=7, **filters)]
    wanted_before = (limit - 1) // 2
    wanted_after = limit - 1 - wanted_before
    for at, anchor in enumerate(listed):
        before, after = at, len(listed) - at - 1
        take_before = min(before, wanted_before + max(0, wanted_after - after))
        take_after = min(after, wanted_after + max(0, wanted_before - before))
        page = await get(client, chat["path"], around=anchor, limit=limit, **filters)
        assert ids_of(page) == listed[at - take_before : at + 1 + take_after], (at, page)
        assert (page["prev_cursor"] is not None, page["next_cursor"] is not None) == (
            take_before < before,
            take_after < after,
        ), (at, page)


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("limit", [1, 2, 3, 6])
@pytest.mark.parametrize("role", [None, "user"])
async def test_paging_outward_both_ways_gives_the_list_exactly(
    client: httpx.AsyncClient, chat: dict[str, Any], order: str, limit: int, role: str | None
) -> None:
    filters = {"order": order, **({"role": role} if role else {})}
    listed = [item["id"] for item in await all_pages(client, chat["path"], limit=7, **filters)]
    anchor = listed[len(listed) // 2]
    page = await get(client, chat["path"], around=anchor, limit=limit, **filters)
    seen = ids_of(page)
    assert anchor in seen
    prev_cursor, next_cursor = page["prev_cursor"], page["next_cursor"]
    while prev_cursor:
        before = await get(client, chat["path"], cursor=prev_cursor, limit=limit, **filters)
        seen = ids_of(before) + seen
        prev_cursor = before["prev_cursor"]
        assert before["next_cursor"]  # back toward the anchor
    while next_cursor:
        after = await get(client, chat["path"], cursor=next_cursor, limit=limit, **filters)
        seen += ids_of(after)
        next_cursor = after["next_cursor"]
        assert after["prev_cursor"]
    assert seen == listed


async def test_a_prev_cursor_returns_the_previous_page(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    first = await get(client, chat["path"], limit=4)
    assert first["prev_cursor"] is None
    second = await get(client, chat["path"], limit=4, cursor=first["next_cursor"])
    back = await get(client, chat["path"], limit=4, cursor=second["prev_cursor"])
    assert ids_of(back) == ids_of(first)
    assert back["prev_cursor"] is None
    assert ids_of(await get(client, chat["path"], limit=4, cursor=back["next_cursor"])) == ids_of(second)
    # A prev_cursor belongs to its list like any cursor.
    assert_problem(
        await client.get(chat["path"], params={"cursor": second["prev_cursor"], "order": "asc"}), 400, "cursor"
    )


async def test_bad_anchors(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    other = await create_conversation(client, (await create_user(client, "bo@example.com"))["id"])
    elsewhere = (await post_batch(client, other["id"], [{"role": "user", "content": "x"}]))[0]["message"]["id"]
    not_here = f"is not in conversation {chat['id']}"
    assert not_here in assert_problem(await client.get(chat["path"], params={"around": elsewhere}), 404)["detail"]
    assert not_here in assert_problem(await client.get(chat["path"], params={"around": 10**12}), 404)["detail"]
    unknown = await client.get("/v1/conversations/999999/messages", params={"around": chat["ids"][0]})
    assert "conversation 999999 does not exist" in assert_problem(unknown, 404)["detail"]
    # A deleted conversation's messages are deleted with it: its anchors are gone, and so is it.
    other_path = f"/v1/conversations/{other['id']}"
    assert (await client.delete(other_path)).status_code == 204
    gone = await client.get(f"{other_path}/messages", params={"around": elsewhere})
    assert f"conversation {other['id']} does not exist" in assert_problem(gone, 404)["detail"]
    # ids[1] is an assistant message: not in the role=user list.
    assert_problem(await client.get(chat["path"], params={"around": chat["ids"][1], "role": "user"}), 422, "around")
    assert_problem(await client.get(chat["path"], params={"around": chat["ids"][1], "offset": 0}), 400, "around")
    first = await get(client, chat["path"], limit=2)
    with_cursor = {"around": chat["ids"][1], "cursor": first["next_cursor"]}
    assert_problem(await client.get(chat["path"], params=with_cursor), 400, "around")
    assert_problem(await client.get(chat["path"], params={"around": 0}), 400, "around")
