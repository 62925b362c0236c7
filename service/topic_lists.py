"""The topics a message lists (TopicRef), and what each process keeps of them: topic names by id,
and each distinct set of topic ids as its list, built on first use.

A topic is never renamed or deleted, so what is read once stays true; reads then look up only
the messages' topic ids. service/topics.py reads the names this cache lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec


class TopicRef(msgspec.Struct):
    """A topic as a message lists it."""

    id: int
    name: str


# The topics of a message without any: one list for all of them, never modified.
NONE: list[TopicRef] = []
# Distinct topic lists kept per database; past this many the cache starts over (a message's topics
# are few of a small dimension, so this is rarely reached).
MAX_CACHED_LISTS = 100_000


class TopicLists(dict[tuple[int, ...], list[TopicRef]]):
    """Topics lists (by name) by the ascending topic ids of the messages that carry them, each
    built once and shared by all of them (never modified).

    A set not seen before is built where it is looked up (``lists[ids]``, no second pass over a
    page): a read of a large history meets new sets for a long while. A KeyError still means that
    a topic's name is not known yet; the caller reads it (topics.lists_of) and looks again.
    """

    __slots__ = ("_names",)

    def __init__(self, names: dict[int, str]) -> None:
        super().__init__()
        self._names = names

    def __missing__(self, key: tuple[int, ...]) -> list[TopicRef]:
        names = self._names
        refs = sorted((TopicRef(topic_id, names[topic_id]) for topic_id in key), key=_by_name) or NONE
        if len(self) >= MAX_CACHED_LISTS:
            self.clear()
        self[key] = refs
        return refs


def _by_name(ref: TopicRef) -> str:
    return ref.name


@dataclass(slots=True)
class TopicCache:
    """What this process has read of one database's topics."""

    # Topic names by id.
    names: dict[int, str] = field(default_factory=dict)
    lists: TopicLists = field(init=False)

    def __post_init__(self) -> None:
        self.lists = TopicLists(self.names)
