"""Keyset cursors: opaque to clients, signed so a forged, truncated or foreign one is a 400.

A cursor carries the position after the last row of a page (a typed Struct per list: e.g. its
timestamp and id) and the scope it belongs to: the list, its parent id, its order and filters.
The token is ``base64url(json([scope, position])) . base64url(hmac)``; decoding checks the
signature in constant time, then that the scope is the request's own, then the position's shape.
The key comes from FREYA_CURSOR_SECRET; without it each start draws a random one, and older
cursors become 400s.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import TypeVar

import msgspec

from service.errors import Invalid

_SIGNATURE_BYTES = 16
P = TypeVar("P", bound=msgspec.Struct)


class TimeKey(msgspec.Struct, array_like=True, frozen=True, omit_defaults=True):
    """The position after a row of a list ordered by (time, id): time in microseconds (exact)."""

    micros: int
    id: int
    # True in a prev_cursor: the page is the one just before this row (lists that page both ways);
    # left out of the token when false, so forward cursors stay [micros, id].
    before: bool = False


class IdKey(msgspec.Struct, array_like=True, frozen=True):
    """The position after a row of a list ordered by id."""

    id: int


class NameKey(msgspec.Struct, array_like=True, frozen=True):
    """The position after a row of a list ordered by name."""

    name: str


class RankKey(msgspec.Struct, array_like=True, frozen=True):
    """The position after a row of a list ordered by (rank, id), and which set is ranked: the
    newest id of the set the first page ranked (None in cursors from before ranking was bounded)."""

    rank: float
    id: int
    newest: int | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class CursorCodec:
    def __init__(self, secret: str | None) -> None:
        self.generated = secret is None
        self._key = (secret or secrets.token_urlsafe(32)).encode()

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:_SIGNATURE_BYTES]

    def encode(self, scope: str, position: msgspec.Struct) -> str:
        payload = msgspec.json.encode((scope, position))
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def decode(self, token: str, scope: str, position: type[P]) -> P:
        """The position a cursor holds; Invalid (400, field ``cursor``) unless it is ours and for this scope."""
        try:
            encoded_payload, encoded_signature = token.split(".")
            payload, signature = _unb64(encoded_payload), _unb64(encoded_signature)
        except (ValueError, binascii.Error):
            raise _unusable("the cursor is malformed; use next_cursor exactly as returned") from None
        if not hmac.compare_digest(signature, self._sign(payload)):
            raise _unusable("the cursor is not valid (altered, or issued before the service's cursor key changed)")
        try:
            cursor_scope, raw = msgspec.json.decode(payload, type=tuple[str, msgspec.Raw])
        except msgspec.ValidationError:
            raise _unusable("the cursor does not fit this list") from None
        if cursor_scope != scope:
            raise _unusable("the cursor belongs to another list, order or filter")
        try:
            return msgspec.json.decode(raw, type=position)
        except msgspec.ValidationError:
            raise _unusable("the cursor does not fit this list") from None


def _unusable(detail: str) -> Invalid:
    """The 400 of a cursor that cannot be read back: it names the query's cursor parameter."""
    return Invalid(detail, field="cursor", source="query")
