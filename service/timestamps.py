"""Times at the edges: in cursors as whole microseconds since the epoch (exact for timestamptz),
and from query strings as UTC when they carry no offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // _MICROSECOND


def from_micros(micros: int | None) -> datetime | None:
    return None if micros is None else EPOCH + micros * _MICROSECOND


def as_utc(moment: datetime | None) -> datetime | None:
    """A time from a query string; one without an offset is taken as UTC (as documented)."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)
