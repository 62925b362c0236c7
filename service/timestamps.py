"""Times at the edges: in cursors as whole microseconds since the epoch (exact for timestamptz),
and from query strings as UTC when they carry no offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.errors import Invalid

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(moment: datetime) -> int:
    return (moment - EPOCH) // _MICROSECOND


def from_micros(micros: int | None) -> datetime | None:
    return None if micros is None else EPOCH + micros * _MICROSECOND


def as_utc(moment: datetime | None, field: str) -> datetime | None:
    """A time from query string ``field``, in UTC; one without an offset is taken as UTC (as
    documented). One whose UTC falls outside the years 1 to 9999 (0001-01-01T00:00:00+01:00) is
    a 400 naming the field: no later step could represent it."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise Invalid(f"{field} is outside the years 1 to 9999 in UTC", field=field, source="query") from None
