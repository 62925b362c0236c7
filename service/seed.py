"""Realistic seed data for load tests and benchmarks, generated deterministically from a seed number.

Shape (for N messages): N/200 users; N/40 conversations whose lengths follow a heavy-tailed
(Pareto) distribution, plus one "whale" conversation holding a quarter of all messages, so deep
pages exist; every message is its conversation's owner's, as the API stores a message sent without
a user_id, so the whale's owner is the heaviest user with about a quarter of all messages (a
user's search through a long history); roles mostly user and assistant with some system and tool;
content of 3 to 60 words drawn with Zipf-like frequencies from a chat vocabulary (common words are
common, rare ones rare, which is what full-text search meets in real life); 400 topics, also
Zipf-distributed, on about 40% of messages. Rows go in with binary COPY in batches; ANALYZE runs at the end.

The same seed number on an empty database gives the same rows. A seed is one transaction: it
adds to whatever the database holds (ids come from the tables' identity sequences, topics that
exist are reused by name), any number of times, and a seed that fails leaves nothing behind.
"""

from __future__ import annotations

import itertools
import random
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import msgspec

from service.admin import run_maintenance
from service.db import Connection
from service.messages import estimate_tokens
from service.queries import Query, QueryFile

_WORDS = """
the be to of and a in that have i it for not on with he as you do at this but his by from they we say
her she or an will my one all would there their what so up out if about who get which go me when make
can like time no just him know take people into year your good some could them see other than then now
look only come its over think also back after use two how our work first well way even new want because
any these give day most us is are was were been has had did does said made found thanks please sure
help question answer idea plan trip flight hotel train ticket booking price cheap budget city museum
beach weather forecast rain sun snow wind temperature morning evening night weekend holiday summer
winter spring autumn recipe dinner lunch breakfast pasta salad soup bread cheese coffee tea wine chicken
vegetables oven minutes bake boil fry sauce garlic onion tomato code python function error bug test
database query index table column server request response api json deploy docker cloud cache memory
latency performance benchmark loop variable class method module package install version update
release branch merge commit review email meeting calendar schedule deadline project report summary
draft document slide presentation budget invoice payment account bank transfer loan rate interest
health doctor appointment sleep exercise run walk gym yoga stretch water diet calories protein
music song playlist album guitar piano concert movie film series episode book novel author chapter
story poem translate spanish french german italian japanese word sentence grammar meaning explain
example list steps reason compare difference between better best worst option choose recommend
suggest maybe probably definitely exactly quickly slowly carefully simple complex easy hard long
short big small large tiny important urgent later tomorrow yesterday today week month lisbon porto
paris berlin rome madrid london tokyo kyoto seoul boston chicago denver seattle toronto sydney
""".split()

# A few words that only about one message in 2,000 carries: what a rare-term search meets.
_RARE_WORDS = ["quokka", "zeppelin", "marzipan", "fjord", "theremin", "axolotl", "sextant", "origami"]

_TOPICS_BASE = """
travel flights hotels food recipes cooking programming python databases postgres devops cloud music
movies books health fitness sleep finance budgeting banking work meetings email writing translation
languages learning math science history weather shopping gifts family kids pets garden home repair
cars cycling running hiking photography art design games sports news politics economics career
""".split()

_ROLES = ("user", "assistant", "system", "tool")
_ROLE_WEIGHTS = (45, 45, 5, 5)
_BATCH = 20_000
DEFAULT_MESSAGES = 1_000_000


@dataclass(frozen=True)
class SeedPlan:
    messages: int
    users: int
    conversations: int
    topics: int

    @classmethod
    def for_messages(cls, messages: int) -> SeedPlan:
        return cls(
            messages=messages,
            users=max(2, messages // 200),
            conversations=max(2, messages // 40),
            topics=min(400, max(10, messages // 100)),
        )


@dataclass
class SeedReport:
    users: int
    conversations: int
    messages: int
    tags: int
    seconds: float

    @property
    def rows_per_second(self) -> float:
        rows = self.users + self.conversations + self.messages + self.tags
        return rows / self.seconds if self.seconds else 0.0


def _zipf_weights(count: int, exponent: float = 1.1) -> list[float]:
    return list(itertools.accumulate(1 / (rank**exponent) for rank in range(1, count + 1)))


def conversation_lengths(plan: SeedPlan, rng: random.Random) -> list[int]:
    """Messages per conversation: one whale with a quarter of them, the rest heavy-tailed, all >= 1."""
    whale = plan.messages // 4
    rest = plan.messages - whale
    others = plan.conversations - 1
    raw = [rng.paretovariate(1.3) for _ in range(others)]
    scale = (rest - others) / sum(raw)
    lengths = [1 + int(r * scale) for r in raw]
    # Hand out what rounding left over, one message each, to keep the total exact.
    for index in range(rest - sum(lengths)):
        lengths[index % others] += 1
    return [whale, *lengths]


class _Progress:
    def __init__(self, label: str, total: int, quiet: bool) -> None:
        self.label, self.total, self.quiet = label, total, quiet
        self.done = 0
        self.last_filled = -1
        self.started = time.perf_counter()

    def advance(self, rows: int) -> None:
        self.done += rows
        if self.quiet:
            return
        elapsed = time.perf_counter() - self.started
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        rate = f"{self.done / elapsed:>10,.0f} rows/s" if elapsed > 0.5 else ""
        line = f"{self.label:<13} [{'#' * filled}{'.' * (width - filled)}] {self.done:>11,}/{self.total:,} {rate}"
        if sys.stderr.isatty():  # redraw in place
            sys.stderr.write("\r" + line + ("\n" if self.done >= self.total else ""))
        elif filled != self.last_filled or self.done >= self.total:  # a log file: a line per step
            sys.stderr.write(line + "\n")
        self.last_filled = filled
        sys.stderr.flush()


class SeedQueries(QueryFile, file="seed"):
    reserve_ids: Query
    topic_ids: Query
    tags_of_new_messages: Query


sql = SeedQueries()


class _Topic(msgspec.Struct):
    id: int
    name: str


async def _reserve_ids(conn: Connection, table: Literal["users", "conversations", "messages"], count: int) -> list[int]:
    ids: list[int] = await sql.reserve_ids.val(conn, table=table, count=count)
    return ids


async def seed(conn: Connection, messages: int, seed_number: int = 42, *, quiet: bool = False) -> SeedReport:
    """Generate and COPY a dataset of ``messages`` messages in one transaction; ANALYZE after it commits."""
    started = time.perf_counter()
    async with conn.transaction():
        report = await _write(conn, messages, seed_number, quiet)
    await run_maintenance(conn, "analyze", None)
    report.seconds = time.perf_counter() - started
    return report


async def _write(conn: Connection, messages: int, seed_number: int, quiet: bool) -> SeedReport:
    rng = random.Random(seed_number)
    plan = SeedPlan.for_messages(messages)
    now = datetime(2026, 11, 1, tzinfo=UTC)

    user_ids = await _reserve_ids(conn, "users", plan.users)
    users = [(uid, f"user{uid}.s{seed_number}@example.com", f"User {uid}", now) for uid in user_ids]
    await conn.copy_records_to_table("users", records=users, columns=["id", "email", "name", "created_at"])
    _Progress("users", plan.users, quiet).advance(plan.users)

    names = [
        f"{_TOPICS_BASE[n % len(_TOPICS_BASE)]}" + (f"-{n // len(_TOPICS_BASE)}" if n >= len(_TOPICS_BASE) else "")
        for n in range(plan.topics)
    ]
    by_name = {t.name: t.id for t in await sql.topic_ids.many(conn, _Topic, names=names)}
    topic_ids = [by_name[name] for name in names]  # in Zipf rank order, whoever created them

    lengths = conversation_lengths(plan, rng)
    conversation_ids = await _reserve_ids(conn, "conversations", len(lengths))
    conversations = []
    for conversation_id in conversation_ids:
        created = now - timedelta(days=365 * rng.random())
        owner = user_ids[rng.randrange(plan.users)]
        conversations.append((conversation_id, owner, f"Conversation {conversation_id}", created, created, 0))
    await conn.copy_records_to_table(
        "conversations",
        records=conversations,
        columns=["id", "user_id", "title", "created_at", "updated_at", "message_count"],
    )
    _Progress("conversations", len(conversations), quiet).advance(len(conversations))

    word_weights = _zipf_weights(len(_WORDS))
    topic_weights = _zipf_weights(len(topic_ids))
    progress = _Progress("messages", plan.messages, quiet)
    tags = 0
    for batch in _message_batches(conversations, lengths, rng, word_weights):
        message_ids = await _reserve_ids(conn, "messages", len(batch))
        tagged = [
            sorted(set(rng.choices(topic_ids, cum_weights=topic_weights, k=rng.choice((1, 1, 2, 3)))))
            if rng.random() < 0.4
            else None
            for _ in message_ids
        ]
        rows = [(message_id, *row, ids) for message_id, row, ids in zip(message_ids, batch, tagged, strict=True)]
        await conn.copy_records_to_table(
            "messages",
            records=rows,
            # token_count given, so the row trigger of migration message_metadata_columns stays idle;
            # topic_ids (migration 0030) is the copy of the tags written next.
            columns=["id", "conversation_id", "user_id", "role", "content", "timestamp", "token_count", "topic_ids"],
        )
        tag_rows = [
            (topic, message_id) for message_id, ids in zip(message_ids, tagged, strict=True) for topic in ids or ()
        ]
        await sql.tags_of_new_messages.val(conn)  # the rows carry their copy: the tags' triggers skip them
        await conn.copy_records_to_table("message_topics", records=tag_rows, columns=["topic_id", "message_id"])
        tags += len(tag_rows)
        progress.advance(len(batch))
    return SeedReport(len(users), len(conversations), plan.messages, tags, 0.0)


def _message_batches(
    conversations: Sequence[tuple[int, int, str, datetime, datetime, int]],
    lengths: Sequence[int],
    rng: random.Random,
    word_weights: list[float],
) -> Iterator[list[tuple[int, int, str, str, datetime, int]]]:
    """Messages (without their ids) conversation by conversation, in timestamp order, in COPY-sized batches."""
    batch: list[tuple[int, int, str, str, datetime, int]] = []
    for (conversation_id, owner, _title, created, _updated, _count), length in zip(conversations, lengths, strict=True):
        moment = created
        # The whale spreads over its year; short ones over minutes to hours.
        step = timedelta(seconds=max(1.0, 365 * 86400 / length)) if length > 10_000 else timedelta(seconds=37)
        for _ in range(length):
            role = rng.choices(_ROLES, weights=_ROLE_WEIGHTS)[0]
            words = rng.choices(_WORDS, cum_weights=word_weights, k=int(3 + 57 * rng.random() ** 2))
            if rng.random() < 0.0005:
                words.append(rng.choice(_RARE_WORDS))
            content = " ".join(words).capitalize() + rng.choice((".", "?", "!", "."))
            batch.append((conversation_id, owner, role, content, moment, estimate_tokens(content)))
            moment += step * (0.5 + rng.random())
            if len(batch) >= _BATCH:
                yield batch
                batch = []
    if batch:
        yield batch


def describe(report: SeedReport) -> str:
    return (
        f"seeded {report.users:,} users, {report.conversations:,} conversations, {report.messages:,} messages, "
        f"{report.tags:,} tags in {report.seconds:.1f} s ({report.rows_per_second:,.0f} rows/s)"
    )
