"""The database layer: SQL files turned into typed queries, and the connection pool.

A ``.sql`` file under ``sql/`` holds named queries::

    -- name: get_user :one
    -- The user with this id, or no row.
    SELECT id, email, name, created_at FROM users WHERE id = :user_id;

``:snake_case`` parameters are compiled to ``$1..$n`` once, at load; the kind picks the asyncpg
call (``:one`` fetchrow, ``:many`` fetch, ``:val`` fetchval, ``:exec`` execute). Each file is
claimed by one ``QueryFile`` subclass whose annotations list its queries, so call sites are
plain attributes that mypy checks, and a query added to a file without its annotation (or the
reverse) fails at load. ``prepare_all`` prepares every statement against the real schema at
start-up: a typo or a schema drift stops the service with the query's name.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import functools
import importlib
import importlib.util
import re
import time
import typing
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import asyncpg
import msgspec

from service.settings import PROJECT_ROOT

SQL_DIR = PROJECT_ROOT / "sql"

Kind = Literal["one", "many", "val", "exec"]
KINDS: tuple[Kind, ...] = typing.get_args(Kind)
if typing.TYPE_CHECKING:
    # A plain connection (tests) or the pool's proxy for one (the service): the same calls.
    Connection: typing.TypeAlias = asyncpg.Connection[asyncpg.Record] | asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
    Pool: typing.TypeAlias = asyncpg.Pool[asyncpg.Record]
else:  # asyncpg's classes are generic only in its stubs
    Connection, Pool = asyncpg.Connection, asyncpg.Pool
T = TypeVar("T")

COLUMNS_START, COLUMNS_END = "/*columns*/", "/*end columns*/"
_ALIAS = re.compile(r"\bAS\s+(\"?[a-z_][a-z0-9_]*\"?)\s*$", re.IGNORECASE)
_HEADER = re.compile(r"^--\s*name:\s*(?P<name>\S+)\s+:(?P<kind>\S+)\s*$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# Everything the parameter scanner must step over: strings, quoted identifiers, dollar quotes,
# comments and casts. A ':' that none of these swallow starts a parameter.
_SKIP = re.compile(
    r"""
      '(?:[^']|'')*'                # string literal (also E'' and U&'': the prefix is outside)
    | "(?:[^"]|"")*"                # quoted identifier
    | \$(?P<tag>[A-Za-z_]*)\$.*?\$(?P=tag)\$   # dollar-quoted string
    | --[^\n]*                      # line comment
    | /\*.*?\*/                     # block comment
    | ::                            # cast
    | :=                            # named argument in a function call
    | :(?P<param>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE | re.DOTALL,
)


class QueryFileError(ValueError):
    """A SQL file breaks the format; the message names the file and the query."""


@dataclass(frozen=True, slots=True)
class Query:
    """One named statement, compiled to positional parameters."""

    file: str
    name: str
    kind: Kind
    sql: str
    params: tuple[str, ...]
    doc: str
    # For a query whose select list is marked /*columns*/ … /*end columns*/: each column's name
    # and its text, the whitelist that ``project`` chooses from.
    columns: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        return f"{self.file}.{self.name}"

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """Positional arguments in ``$n`` order; a missing or unknown keyword is a TypeError."""
        if len(values) != len(self.params) or not all(p in values for p in self.params):
            missing = [p for p in self.params if p not in values]
            extra = [k for k in values if k not in self.params]
            raise TypeError(f"{self.label}: missing parameters {missing}, unexpected {extra}")
        return [values[p] for p in self.params]

    async def one(self, conn: Connection, into: type[T], /, **params: Any) -> T | None:
        self._expect("one")
        started = time.perf_counter()
        row = await conn.fetchrow(self.sql, *self.args(params))
        _count_time(started)
        return None if row is None else msgspec.convert(dict(row.items()), into)

    async def many(self, conn: Connection, into: type[T], /, **params: Any) -> list[T]:
        self._expect("many")
        started = time.perf_counter()
        rows = await conn.fetch(self.sql, *self.args(params))
        _count_time(started)
        return msgspec.convert([dict(row.items()) for row in rows], list[into])  # type: ignore[valid-type]

    async def val(self, conn: Connection, /, **params: Any) -> Any:
        self._expect("val")
        started = time.perf_counter()
        value = await conn.fetchval(self.sql, *self.args(params))
        _count_time(started)
        return value

    async def exec(self, conn: Connection, /, **params: Any) -> str:
        self._expect("exec")
        started = time.perf_counter()
        # The text comes from our own files only; request data always travels as arguments.
        status = await conn.execute(self.sql, *self.args(params))
        _count_time(started)
        return status

    def project(self, names: typing.Iterable[str]) -> Query:
        """The same query selecting only ``names`` (in the query's own order); unknown names raise KeyError.

        The SQL is assembled from the query's own column texts, never from the caller's strings.
        """
        return _project(self, frozenset(names))

    def _expect(self, kind: Kind) -> None:
        if self.kind != kind:
            raise TypeError(f"{self.label} is a :{self.kind} query, called as :{kind}")


@dataclass(slots=True)
class DatabaseTime:
    """Seconds one request spent waiting on its queries (reported in Server-Timing), how many
    statements it completed, and whether its failure may be retried on a fresh connection."""

    seconds: float = 0.0
    statements: int = 0
    # Set by PoolDatabase when a broken connection refused a statement before sending it, and
    # nothing the request did before can have been committed: the request may run once more.
    retryable: bool = False


_request_time: ContextVar[DatabaseTime | None] = ContextVar("database_time", default=None)


def start_timing() -> DatabaseTime:
    """Begin summing query time for the current request (its context)."""
    timing = DatabaseTime()
    _request_time.set(timing)
    return timing


def _count_time(started: float) -> None:
    timing = _request_time.get()
    if timing is not None:
        timing.seconds += time.perf_counter() - started
        timing.statements += 1


@functools.lru_cache(maxsize=512)
def _project(query: Query, names: frozenset[str]) -> Query:
    known = dict(query.columns)
    if not query.columns:
        raise TypeError(f"{query.label} has no /*columns*/ list to project")
    if unknown := sorted(names - known.keys()):
        raise KeyError(", ".join(unknown))
    start, end = query.sql.index(COLUMNS_START), query.sql.index(COLUMNS_END) + len(COLUMNS_END)
    chosen = ", ".join(text for name, text in query.columns if name in names)
    return dataclasses.replace(query, sql=query.sql[:start] + chosen + query.sql[end:])


def _split_top_level(text: str) -> list[str]:
    """Split at commas outside parentheses and string literals."""
    parts: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == "," and depth == 0 and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return parts


def parse_columns(sql: str, where: str) -> tuple[tuple[str, str], ...]:
    """The marked list split at top-level commas: select-list columns that each end in ``AS name``,
    or the ``'name', expression`` pairs of a json_build_object."""
    if COLUMNS_START not in sql:
        return ()
    inner = sql[sql.index(COLUMNS_START) + len(COLUMNS_START) : sql.index(COLUMNS_END)]
    if "$" in inner:
        raise QueryFileError(f"{where}: the /*columns*/ list may not use parameters")
    parts = _split_top_level(inner)
    columns = []
    if parts and parts[0].startswith("'"):
        # Key/value pairs of a json_build_object: 'name', expression, 'name', expression …
        if len(parts) % 2:
            raise QueryFileError(f"{where}: the /*columns*/ pairs of json_build_object are uneven")
        for key, value in zip(parts[::2], parts[1::2], strict=True):
            columns.append((key.strip("'"), f"{key}, {value}"))
        return tuple(columns)
    for part in parts:
        alias = _ALIAS.search(part)
        if alias is None:
            raise QueryFileError(f"{where}: column {part!r} in /*columns*/ needs 'AS name'")
        columns.append((alias.group(1).strip('"'), part))
    return tuple(columns)


def compile_parameters(body: str, where: str) -> tuple[str, tuple[str, ...]]:
    """Replace ``:name`` with ``$n`` (a repeated name reuses its number)."""
    order: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group("param")
        if name is None:
            return match.group(0)
        if not _NAME.match(name):
            raise QueryFileError(f"{where}: parameter :{name} is not snake_case")
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    return _SKIP.sub(replace, body), tuple(order)


def parse_sql_file(path: Path) -> dict[str, Query]:
    """Every query of one file, by name."""
    queries: dict[str, Query] = {}
    current: tuple[str, Kind] | None = None
    doc: list[str] = []
    body: list[str] = []

    def finish() -> None:
        if current is None:
            if any(line.strip() and not line.lstrip().startswith("--") for line in body):
                raise QueryFileError(f"{path.name}: SQL before the first '-- name:' header")
            return
        name, kind = current
        where = f"{path.name}: query {name}"
        text = "\n".join(body).strip()
        if not text:
            raise QueryFileError(f"{where} has no statement")
        sql, params = compile_parameters(text, where)
        columns = parse_columns(sql, where)
        # The leading comment travels with the statement: pg_stat_statements and the server log
        # then say which query ran.
        queries[name] = Query(path.stem, name, kind, f"-- {path.stem}.{name}\n{sql}", params, " ".join(doc), columns)

    for line in path.read_text().splitlines():
        header = _HEADER.match(line.strip())
        if header:
            finish()
            name, kind = header.group("name"), header.group("kind")
            if not _NAME.match(name):
                raise QueryFileError(f"{path.name}: query name {name!r} is not snake_case")
            if kind not in KINDS:
                raise QueryFileError(f"{path.name}: query {name} has unknown kind :{kind}")
            if name in queries or (current is not None and current[0] == name):
                raise QueryFileError(f"{path.name}: query {name} is defined twice")
            current, doc, body = (name, typing.cast(Kind, kind)), [], []
        elif current is not None and not body and line.lstrip().startswith("--"):
            doc.append(line.lstrip()[2:].strip())
        else:
            body.append(line)
    finish()
    return queries


class QueryFile:
    """A typed view of one SQL file: subclasses annotate each query name as ``Query``.

    ``class UserQueries(QueryFile, file="users"): get_user: Query`` loads ``sql/users.sql``.
    """

    registry: ClassVar[dict[str, type[QueryFile]]] = {}
    file: ClassVar[str]

    def __init_subclass__(cls, *, file: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if file in QueryFile.registry:
            raise QueryFileError(f"{file}.sql is claimed twice")
        cls.file = file
        QueryFile.registry[file] = cls

    def __init__(self, sql_dir: Path = SQL_DIR) -> None:
        queries = parse_sql_file(sql_dir / f"{self.file}.sql")
        declared = {name for name, hint in typing.get_type_hints(type(self)).items() if hint is Query}
        if declared != set(queries):
            raise QueryFileError(
                f"{self.file}.sql: queries without a declaration {sorted(set(queries) - declared)}, "
                f"declarations without a query {sorted(declared - set(queries))}"
            )
        for name, query in queries.items():
            setattr(self, name, query)
        self.queries = queries


def load_all(sql_dir: Path = SQL_DIR) -> list[Query]:
    """Every query of every file; a file no QueryFile claims is an error (it would never be prepared).

    ``sql/<name>.sql`` belongs to the slice ``service/<name>.py``: importing it registers its
    QueryFile class, whether or not the app itself uses that module (the seed's, for example).
    """
    for path in sql_dir.glob("*.sql"):
        if path.stem not in QueryFile.registry and importlib.util.find_spec(f"service.{path.stem}") is not None:
            importlib.import_module(f"service.{path.stem}")
    unclaimed = sorted(p.stem for p in sql_dir.glob("*.sql") if p.stem not in QueryFile.registry)
    if unclaimed:
        raise QueryFileError(f"SQL files without a QueryFile class: {unclaimed}")
    return [q for cls in QueryFile.registry.values() for q in cls(sql_dir).queries.values()]


class QueryPrepareError(RuntimeError):
    """A query does not prepare against the database: a typo or a schema that drifted."""


async def prepare_all(conn: Connection, queries: Iterable[Query]) -> int:
    """Prepare every statement once; the first failure names its file and query."""
    count = 0
    for query in queries:
        try:
            await conn.prepare(query.sql)
        except asyncpg.PostgresError as error:
            raise QueryPrepareError(f"query {query.label} does not prepare: {error}") from error
        count += 1
    return count


class Database(abc.ABC):
    """Where handlers get a connection: the pool in production, one shared connection in tests."""

    @abc.abstractmethod
    def connection(self) -> typing.AsyncContextManager[Connection]: ...

    @abc.abstractmethod
    def request_transaction(self) -> typing.AsyncContextManager[Connection]: ...


# The connection a request's whole work runs on, when it runs in one transaction (a POST under
# an Idempotency-Key: the key's claim, the handler's write and the stored answer commit together).
_request_connection: ContextVar[Connection | None] = ContextVar("request_connection", default=None)


def _never_sent(error: BaseException) -> bool:
    """asyncpg refused the statement before writing it to the socket: the connection is broken
    (typically an idle one that received PostgreSQL's FATAL and has not noticed the close yet)."""
    return type(error) in (asyncpg.InterfaceError, asyncpg.InternalClientError)


# Errors after which a connection cannot be trusted for another request (besides _never_sent).
_BROKEN = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.CannotConnectNowError,
    asyncpg.ProtocolError,
    ConnectionError,
)


class PoolDatabase(Database):
    def __init__(self, pool: Pool, acquire_timeout: float) -> None:
        self.pool = pool
        self.acquire_timeout = acquire_timeout
        # Requests waiting for a connection right now (a metrics gauge).
        self.waiting = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        bound = _request_connection.get()
        if bound is not None:
            # Inside the request's transaction: a savepoint, so a failed statement undoes only
            # its own part, as it would on a connection of its own.
            async with _transaction(bound):
                yield bound
            return
        self.waiting += 1
        try:
            # Without a timeout asyncpg waits for a free connection forever.
            conn = await self.pool.acquire(timeout=self.acquire_timeout)
        finally:
            self.waiting -= 1
        statements_before = _statements_so_far()
        try:
            yield conn
        except BaseException as error:
            _discard_if_broken(conn, error, retryable=statements_before == _statements_so_far())
            raise
        finally:
            await self.pool.release(conn)

    @asynccontextmanager
    async def request_transaction(self) -> AsyncIterator[Connection]:
        """One transaction for everything the request does: connection() inside it hands out
        savepoints on it. Commits when the block ends without an exception."""
        self.waiting += 1
        try:
            conn = await self.pool.acquire(timeout=self.acquire_timeout)
        finally:
            self.waiting -= 1
        bound = _request_connection.set(conn)
        try:
            async with _transaction(conn):
                yield conn
        except BaseException as error:
            # Nothing of the request is committed when it fails here (the COMMIT is the last
            # statement): a statement refused before sending leaves it safe to run again.
            _discard_if_broken(conn, error, retryable=True)
            raise
        finally:
            _request_connection.reset(bound)
            await self.pool.release(conn)


@asynccontextmanager
async def _transaction(conn: Connection) -> AsyncIterator[None]:
    """conn.transaction(), except that a connection that died inside it keeps its own error:
    asyncpg's would replace it with "cannot call Transaction.__aexit__(): connection is closed"."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    except BaseException:
        with contextlib.suppress(asyncpg.InterfaceError):  # the connection is gone: so is the transaction
            await transaction.rollback()
        raise
    await transaction.commit()


def _statements_so_far() -> int:
    timing = _request_time.get()
    return -1 if timing is None else timing.statements


def _discard_if_broken(conn: Connection, error: BaseException, *, retryable: bool) -> None:
    """Terminate a connection that failed in a way that leaves it unusable, so the pool opens a
    new one instead of handing the broken one to the next request; mark the request retryable
    when its statement never left and nothing before it can have been committed."""
    if not (_never_sent(error) or isinstance(error, _BROKEN)):
        return
    with contextlib.suppress(asyncpg.InterfaceError):  # lost already: asyncpg gave it back to the pool
        conn.terminate()
    timing = _request_time.get()
    if timing is not None and retryable and _never_sent(error):
        timing.retryable = True


class SharedConnectionDatabase(Database):
    """Hands out one connection, so a test's rolled-back transaction spans the app's work.

    Each use runs in a savepoint: a failed statement then undoes only its own request, as it
    would on a pooled connection, instead of aborting the test's whole transaction.
    """

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        async with self.conn.transaction():
            yield self.conn

    def request_transaction(self) -> typing.AsyncContextManager[Connection]:
        return self.connection()


async def configure_connection(conn: Connection) -> None:
    """Per-connection set-up: json and jsonb arrive decoded by msgspec (topics lists built in SQL)."""
    for json_type in ("json", "jsonb"):
        await conn.set_type_codec(json_type, schema="pg_catalog", encoder=_encode_json, decoder=msgspec.json.decode)


def _encode_json(value: Any) -> str:
    return msgspec.json.encode(value).decode()


async def estimate_rows(conn: Connection, query: Query, /, **params: Any) -> int:
    """The planner's row estimate for ``query`` (count=estimated): no scan, just statistics."""
    plan = await conn.fetchval("EXPLAIN (FORMAT JSON) " + query.sql, *query.args(params))
    if isinstance(plan, str):
        plan = msgspec.json.decode(plan)
    node = plan[0]["Plan"]
    # Below an Aggregate (count(*)) is the scan whose row estimate is the answer.
    while node.get("Node Type") == "Aggregate" and node.get("Plans"):
        node = node["Plans"][0]
    return int(node["Plan Rows"])


async def _keep_session(conn: Connection) -> None:
    """Skip asyncpg's reset query on release (RESET ALL, UNLISTEN, advisory unlocks).

    It costs a round trip per request, and the service keeps no session state (no SET without
    LOCAL, no LISTEN, no session advisory locks). asyncpg still rolls back an open transaction.
    """


async def create_pool(
    url: str, *, min_size: int, max_size: int, statement_timeout_ms: int, connect_timeout: float
) -> Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        timeout=connect_timeout,
        server_settings={
            "statement_timeout": str(statement_timeout_ms),
            "application_name": "freya-backend",
        },
        reset=_keep_session,
        init=configure_connection,
    )
    assert pool is not None
    return pool
