"""The list envelope every collection answers with: ``{items, next_cursor}`` and, when asked, ``total``."""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

T = TypeVar("T")


class Page(msgspec.Struct, Generic[T], omit_defaults=False):
    items: list[T]
    next_cursor: str | None = None
    # Present only when the request asked for count=exact or count=estimated.
    total: int | msgspec.UnsetType = msgspec.UNSET
