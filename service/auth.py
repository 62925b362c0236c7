"""Service tokens: who may call /v1, and with which scopes (read, write, admin).

FREYA_API_TOKENS holds ``name:token:scope,scope`` entries separated by ``;``. When it is set,
everything but ``/health/*`` and ``/metrics`` needs ``Authorization: Bearer <token>``: a missing
or unknown token is a 401, a token without the scope the request needs a 403. GET, HEAD and
OPTIONS (which only lists a path's methods) need ``read``, other methods ``write``, and
``/v1/admin/*`` needs ``admin``. Tokens are compared as SHA-256 digests in constant time against
every configured token, and never logged; the caller's token *name* is what the rest of the
service sees (``scope["state"]["principal"]``).

The docs page is for people with a browser, which cannot send a Bearer header: there the token
is also taken as the password of HTTP Basic, and a missing one is asked for (service/docs.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass

from litestar.exceptions import NotAuthorizedException, PermissionDeniedException

from service import docs

SCOPES = frozenset({"read", "write", "admin"})
ANONYMOUS = "anonymous"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class Token:
    name: str
    digest: bytes
    scopes: frozenset[str]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(spec: str) -> tuple[Token, ...]:
    """The tokens of FREYA_API_TOKENS; ValueError says which entry is wrong (without echoing a token)."""
    tokens: list[Token] = []
    for number, entry in enumerate((e.strip() for e in spec.split(";") if e.strip()), start=1):
        parts = entry.split(":")
        if len(parts) != 3:
            raise ValueError(f"FREYA_API_TOKENS entry {number} must be name:token:scopes")
        name, secret, scope_list = parts
        scopes = frozenset(s.strip() for s in scope_list.split(",") if s.strip())
        if not _NAME.match(name):
            raise ValueError(f"FREYA_API_TOKENS entry {number}: the name may hold letters, digits, . _ - only")
        if len(secret) < _MIN_TOKEN_LENGTH:
            raise ValueError(
                f"FREYA_API_TOKENS entry {number} ({name}): the token needs {_MIN_TOKEN_LENGTH}+ characters"
            )
        if not scopes or not scopes <= SCOPES:
            raise ValueError(f"FREYA_API_TOKENS entry {number} ({name}): scopes must be among read, write, admin")
        tokens.append(Token(name, _digest(secret), scopes))
    if not tokens:
        raise ValueError("FREYA_API_TOKENS is set but holds no token")
    if len({t.name for t in tokens}) != len(tokens):
        raise ValueError("FREYA_API_TOKENS names a token twice")
    return tuple(tokens)


def is_open(path: str) -> bool:
    """Paths that stay reachable without a token: the probes, the metrics scrape, the docs' assets."""
    return path == "/metrics" or path.startswith("/health/") or docs.is_asset(path)


# OPTIONS changes nothing: it answers which methods a path has (Allow).
_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def required_scope(method: str, path: str) -> str:
    if path == "/v1/admin" or path.startswith("/v1/admin/"):
        return "admin"
    return "read" if method in _READ_METHODS else "write"


def _presented(authorization: str, basic: bool) -> str | None:
    """The token of ``Bearer <token>``, or (``basic``) the password of ``Basic base64(user:token)``."""
    scheme, _, credentials = authorization.partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if basic and scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def identify(tokens: tuple[Token, ...], authorization: str | None, *, basic: bool = False) -> Token | None:
    """The token presented in an Authorization header, checked against all of them in constant time."""
    presented = _presented(authorization, basic) if authorization is not None else None
    if presented is None:
        return None
    digest = _digest(presented)
    found = None
    for token in tokens:
        # No early exit: the time taken does not tell which token, or how much of one, matched.
        if hmac.compare_digest(digest, token.digest):
            found = token
    return found


def authorize(tokens: tuple[Token, ...], method: str, path: str, authorization: bytes | None) -> str:
    """The caller's name for this request; 401 or 403 when it may not make it."""
    if not tokens or is_open(path):
        return ANONYMOUS
    for_people = docs.is_docs(path)
    token = identify(tokens, authorization.decode("latin-1") if authorization is not None else None, basic=for_people)
    if token is None:
        raise NotAuthorizedException(
            "a valid service token is required: Authorization: Bearer <token>"
            + (" (in a browser: the token as the password, any user name)" if for_people else ""),
            headers={"WWW-Authenticate": docs.BASIC_REALM if for_people else 'Bearer realm="freya"'},
        )
    needed = required_scope(method, path)
    if needed not in token.scopes:
        raise PermissionDeniedException(f"token {token.name!r} lacks the {needed!r} scope this request needs")
    return token.name
