"""Retention: ``make purge`` removes what was deleted long enough ago, for good, and prunes the feed.

Why it is careful: it runs on a live database. Deleted messages and conversations older than
FREYA_RETENTION_DAYS go with their revisions and set-aside tags; changes older than
FREYA_CHANGES_RETENTION_DAYS leave the feed. Each batch is one short transaction of at most
``batch`` rows, rows locked by a concurrent restore are skipped (SKIP LOCKED), and each batch
commits on its own: interrupting it loses nothing, and running it again carries on. Messages go
before their conversations, so removing a conversation never cascades into a long transaction.
The feed reports the rows as ``purged`` (not ``erased``: that is what deleting a user does).
"""

from __future__ import annotations

from datetime import timedelta

import msgspec

from service import changes
from service.db import Connection
from service.queries import Query, QueryFile

BATCH = 1000


class PurgeQueries(QueryFile, file="purge"):
    mark_purging: Query
    purge_messages: Query
    purge_conversations: Query


sql = PurgeQueries()


class _PurgedMessages(msgspec.Struct):
    messages: int
    revisions: int
    tags: int


class PurgeReport(msgspec.Struct):
    messages: int = 0
    revisions: int = 0
    tags: int = 0
    conversations: int = 0
    changes: int = 0

    def describe(self) -> str:
        return (
            f"purged {self.messages:,} deleted messages (with {self.revisions:,} revisions and {self.tags:,} tags) "
            f"and {self.conversations:,} deleted conversations; pruned {self.changes:,} changes from the feed"
        )


async def purge(
    conn: Connection, *, retention: timedelta, changes_retention: timedelta, batch: int = BATCH
) -> PurgeReport:
    """Purge in batches until a batch comes back short; see the module docstring."""
    report = PurgeReport()
    while True:
        async with conn.transaction():
            await sql.mark_purging.val(conn)
            removed = await sql.purge_messages.one(conn, _PurgedMessages, older_than=retention, batch=batch)
        assert removed is not None
        report.messages += removed.messages
        report.revisions += removed.revisions
        report.tags += removed.tags
        if removed.messages < batch:
            break
    while True:
        async with conn.transaction():
            await sql.mark_purging.val(conn)
            conversations = int(await sql.purge_conversations.val(conn, older_than=retention, batch=batch))
        report.conversations += conversations
        if conversations < batch:
            break
    while True:
        pruned = int(await changes.sql.prune_changes.val(conn, older_than=changes_retention, batch=batch * 10))
        report.changes += pruned
        if pruned < batch * 10:
            break
    return report
