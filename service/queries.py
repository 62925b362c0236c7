"""SQL files turned into typed queries: parse, compile parameters, project columns, prepare.

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

Text that several statements share (the message object, a filter block) is written once, under a
``-- fragment: name`` header, and stands in a statement as ``/*include name*/`` (a fragment of
the same file, defined above) or ``/*include file.name*/`` (one of ``sql/file.sql``).

A statement may mark optional parts, ``/*part name*/ … /*end part*/`` (a column and the join
that reads it): they run as written, and ``project`` keeps only the parts it is asked for by name,
so a ``fields=`` request that leaves a part out does not pay for it.

Rows become msgspec Structs positionally (``Struct(*record)``): no per-row dict, no validation
pass. The select list must therefore name the Struct's fields in order, which is checked on the
first call of each (query, Struct) pair.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import re
import time
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import asyncpg
import msgspec

from service.db import Connection, count_time
from service.settings import PROJECT_ROOT

SQL_DIR = PROJECT_ROOT / "sql"

Kind = Literal["one", "many", "val", "exec"]
KINDS: tuple[Kind, ...] = typing.get_args(Kind)
T = TypeVar("T", bound=msgspec.Struct)

COLUMNS_START, COLUMNS_END = "/*columns*/", "/*end columns*/"
_PART = re.compile(r"/\*part (?P<name>[a-z][a-z0-9_]*)\*/(?P<text>.*?)/\*end part\*/", re.DOTALL)
_ALIAS = re.compile(r"\bAS\s+(\"?[a-z_][a-z0-9_]*\"?)\s*$", re.IGNORECASE)
_HEADER = re.compile(r"^--\s*(?P<what>name|fragment):\s*(?P<name>\S+)(?:\s+:(?P<kind>\S+))?\s*$")
_INCLUDE = re.compile(r"/\*include (?P<name>(?:[a-z][a-z0-9_]*\.)?[a-z][a-z0-9_]*)\*/")
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


class QueryPrepareError(RuntimeError):
    """A query does not prepare against the database: a typo or a schema that drifted."""


# (query label, Struct) pairs whose column order has been checked against the Struct's fields.
_checked: set[tuple[str, type[msgspec.Struct]]] = set()


def _check_columns(query: Query, into: type[msgspec.Struct], record: asyncpg.Record) -> None:
    columns = tuple(record.keys())
    fields = into.__struct_fields__
    required = len(fields) - len(into.__struct_defaults__)
    if columns != fields[: len(columns)] or len(columns) < required:
        raise TypeError(f"{query.label} selects {columns}, which does not build {into.__name__}{fields}")
    _checked.add((query.label, into))


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
    # The names of its /*part name*/ … /*end part*/ segments, which ``project`` may leave out.
    parts: frozenset[str] = frozenset()

    @property
    def label(self) -> str:
        return f"{self.file}.{self.name}"

    def args(self, values: Mapping[str, Any]) -> list[Any]:
        """Positional arguments in ``$n`` order; a missing or unknown keyword is a TypeError."""
        if len(values) == len(self.params):
            try:
                return [values[p] for p in self.params]
            except KeyError:
                pass
        missing = [p for p in self.params if p not in values]
        extra = [k for k in values if k not in self.params]
        raise TypeError(f"{self.label}: missing parameters {missing}, unexpected {extra}")

    async def one(self, conn: Connection, into: type[T], /, **params: Any) -> T | None:
        self._expect("one")
        started = time.perf_counter()
        row = await conn.fetchrow(self.sql, *self.args(params))
        count_time(started)
        if row is None:
            return None
        if (self.label, into) not in _checked:
            _check_columns(self, into, row)
        return into(*row)

    async def many(self, conn: Connection, into: type[T], /, **params: Any) -> list[T]:
        self._expect("many")
        rows = await self.records(conn, **params)
        if rows and (self.label, into) not in _checked:
            _check_columns(self, into, rows[0])
        return [into(*row) for row in rows]

    async def records(self, conn: Connection, /, **params: Any) -> list[asyncpg.Record]:
        """The rows as asyncpg returns them, for callers that read a row in parts."""
        self._expect("many")
        started = time.perf_counter()
        rows = await conn.fetch(self.sql, *self.args(params))
        count_time(started)
        return rows

    async def val(self, conn: Connection, /, **params: Any) -> Any:
        self._expect("val")
        started = time.perf_counter()
        value = await conn.fetchval(self.sql, *self.args(params))
        count_time(started)
        return value

    async def exec(self, conn: Connection, /, **params: Any) -> str:
        self._expect("exec")
        started = time.perf_counter()
        # The text comes from our own files only; request data always travels as arguments.
        status = await conn.execute(self.sql, *self.args(params))
        count_time(started)
        return status

    def project(self, names: Iterable[str]) -> Query:
        """The same query selecting only ``names`` (in the query's own order) and keeping only the
        parts among them; unknown names raise KeyError.

        The SQL is assembled from the query's own texts, never from the caller's strings.
        """
        return _project(self, frozenset(names))

    def _expect(self, kind: Kind) -> None:
        if self.kind != kind:
            raise TypeError(f"{self.label} is a :{self.kind} query, called as :{kind}")


@functools.lru_cache(maxsize=512)
def _project(query: Query, names: frozenset[str]) -> Query:
    known = dict(query.columns)
    if not query.columns:
        raise TypeError(f"{query.label} has no /*columns*/ list to project")
    if unknown := sorted(names - known.keys() - query.parts):
        raise KeyError(", ".join(unknown))
    start, end = query.sql.index(COLUMNS_START), query.sql.index(COLUMNS_END) + len(COLUMNS_END)
    chosen = ", ".join(text for name, text in query.columns if name in names)

    def settle(text: str) -> str:
        return _PART.sub(lambda part: part.group("text") if part.group("name") in names else "", text)

    rest = settle(query.sql[end:])
    # Nothing chosen: the separator after the list goes too (a kept part may start with it).
    if not chosen and rest.startswith(","):
        rest = rest[1:]
    sql = settle(query.sql[:start]) + chosen + rest
    # Its parts are settled: kept ones are plain text now, and there is nothing left to leave out.
    return dataclasses.replace(query, sql=sql, parts=frozenset())


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
    """The marked select list split at top-level commas: columns that each end in ``AS name``."""
    if COLUMNS_START not in sql:
        return ()
    inner = sql[sql.index(COLUMNS_START) + len(COLUMNS_START) : sql.index(COLUMNS_END)]
    if "$" in inner:
        raise QueryFileError(f"{where}: the /*columns*/ list may not use parameters")
    columns = []
    for part in _split_top_level(inner):
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


def _expand(text: str, fragments: Mapping[str, str], sql_dir: Path, where: str) -> str:
    def include(match: re.Match[str]) -> str:
        name = match.group("name")
        file, _, fragment = name.rpartition(".")
        known = _fragments(sql_dir / f"{file}.sql") if file else fragments
        if fragment not in known:
            raise QueryFileError(f"{where} includes {name}, which is not a fragment defined above it")
        return known[fragment]

    return _INCLUDE.sub(include, text)


def _fragments(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    return _parse(path)[1]


def parse_sql_file(path: Path) -> dict[str, Query]:
    """Every query of one file, by name."""
    return _parse(path)[0]


def _parse(path: Path) -> tuple[dict[str, Query], dict[str, str]]:
    queries: dict[str, Query] = {}
    fragments: dict[str, str] = {}
    current: tuple[str, str, Kind | None] | None = None  # (name or fragment, its name, kind)
    doc: list[str] = []
    body: list[str] = []

    def finish() -> None:
        if current is None:
            if any(line.strip() and not line.lstrip().startswith("--") for line in body):
                raise QueryFileError(f"{path.name}: SQL before the first '-- name:' header")
            return
        what, name, kind = current
        where = f"{path.name}: {'query' if what == 'name' else 'fragment'} {name}"
        text = _expand("\n".join(body).strip(), fragments, path.parent, where)
        if not text:
            raise QueryFileError(f"{where} has no {'statement' if kind else 'text'}")
        if kind is None:
            fragments[name] = text
            return
        sql, params = compile_parameters(text, where)
        columns = parse_columns(sql, where)
        # The leading comment travels with the statement: pg_stat_statements and the server log
        # then say which query ran.
        if any("$" in part.group("text") for part in _PART.finditer(sql)):
            raise QueryFileError(f"{where}: a /*part*/ may not use parameters (leaving it out would renumber them)")
        parts = frozenset(part.group("name") for part in _PART.finditer(sql))
        queries[name] = Query(
            path.stem, name, kind, f"-- {path.stem}.{name}\n{sql}", params, " ".join(doc), columns, parts
        )

    for line in path.read_text().splitlines():
        header = _HEADER.match(line.strip())
        if header:
            finish()
            what, name, kind = header.group("what"), header.group("name"), header.group("kind")
            if not _NAME.match(name):
                raise QueryFileError(
                    f"{path.name}: {'query name' if what == 'name' else what} {name!r} is not snake_case"
                )
            if what == "fragment" and kind is not None:
                raise QueryFileError(f"{path.name}: fragment {name} takes no kind")
            if what == "name" and kind not in KINDS:
                raise QueryFileError(f"{path.name}: query {name} has unknown kind :{kind}")
            if name in queries or name in fragments or (current is not None and current[1] == name):
                raise QueryFileError(f"{path.name}: query {name} is defined twice")
            current, doc, body = (what, name, typing.cast("Kind | None", kind)), [], []
        elif current is not None and not body and line.lstrip().startswith("--"):
            doc.append(line.lstrip()[2:].strip())
        else:
            body.append(line)
    finish()
    return queries, fragments


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

    ``sql/<name>.sql`` belongs to ``service/<name>.py``: importing it registers its QueryFile
    class. The service prepares only its own files (``prepare_all`` over the app's list); this
    loads them all, the seed's too, for the tests that check every file.
    """
    for path in sql_dir.glob("*.sql"):
        if path.stem not in QueryFile.registry and importlib.util.find_spec(f"service.{path.stem}") is not None:
            importlib.import_module(f"service.{path.stem}")
    unclaimed = sorted(p.stem for p in sql_dir.glob("*.sql") if p.stem not in QueryFile.registry)
    if unclaimed:
        raise QueryFileError(f"SQL files without a QueryFile class: {unclaimed}")
    return [q for cls in QueryFile.registry.values() for q in cls(sql_dir).queries.values()]


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


def queries_of(files: Sequence[QueryFile]) -> list[Query]:
    """The statements of these files (the app's own, for prepare_all)."""
    return [query for file in files for query in file.queries.values()]
