"""The SQL-file query layer: parsing, parameter compilation, typed calls, and every query prepared."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from service import queries as db
from service.db import Connection
from service.queries import Query, QueryFile, QueryFileError, compile_parameters, parse_sql_file


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.sql"
    path.write_text(text)
    return path


async def test_every_query_prepares_against_the_migrated_schema(conn: Connection) -> None:
    queries = db.load_all()
    assert len(queries) >= 7
    assert await db.prepare_all(conn, queries) == len(queries)


def test_every_sql_file_is_claimed_and_every_statement_labelled() -> None:
    for query in db.load_all():
        assert query.sql.startswith(f"-- {query.file}.{query.name}\n")
        assert "SELECT *" not in query.sql.upper().replace("SELECT *,", "")


@pytest.mark.parametrize(
    ("body", "expected", "params"),
    [
        ("SELECT :a, :b, :a", "SELECT $1, $2, $1", ("a", "b")),
        ("SELECT :a::bigint[]", "SELECT $1::bigint[]", ("a",)),
        ("SELECT ':not_a_param', \"col:x\", :p", "SELECT ':not_a_param', \"col:x\", $1", ("p",)),
        ("SELECT $$ :inside $$, $t$ :x $t$, :y", "SELECT $$ :inside $$, $t$ :x $t$, $1", ("y",)),
        ("SELECT 1 -- :commented\n, :z /* :also */", "SELECT 1 -- :commented\n, $1 /* :also */", ("z",)),
        ("SELECT 'it''s :no', :yes", "SELECT 'it''s :no', $1", ("yes",)),
        ("SELECT f(x := 1), :v", "SELECT f(x := 1), $1", ("v",)),
    ],
)
def test_parameters_compile_to_positions(body: str, expected: str, params: tuple[str, ...]) -> None:
    assert compile_parameters(body, "test") == (expected, params)


def test_camel_case_parameter_is_rejected() -> None:
    with pytest.raises(QueryFileError, match=r"q\.sql: query x: parameter :userId is not snake_case"):
        compile_parameters("SELECT :userId", "q.sql: query x")


def test_file_parses_names_kinds_and_docs(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "things",
        "-- name: get_thing :one\n-- The thing.\n-- Or nothing.\nSELECT :id AS id;\n\n"
        "-- name: count_things :val\nSELECT count(*) FROM pg_class;\n",
    )
    queries = parse_sql_file(path)
    assert list(queries) == ["get_thing", "count_things"]
    assert queries["get_thing"].doc == "The thing. Or nothing."
    assert queries["get_thing"].params == ("id",)
    assert queries["get_thing"].sql == "-- things.get_thing\nSELECT $1 AS id;"
    assert queries["count_things"].kind == "val"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("-- name: a :one\nSELECT 1;\n-- name: a :one\nSELECT 2;\n", "query a is defined twice"),
        ("-- name: a :first\nSELECT 1;\n", "query a has unknown kind :first"),
        ("-- name: BadName :one\nSELECT 1;\n", "query name 'BadName' is not snake_case"),
        ("SELECT 0;\n-- name: a :one\nSELECT 1;\n", "SQL before the first"),
        ("-- name: a :one\n-- only a comment\n", "query a has no statement"),
    ],
)
def test_malformed_files_are_rejected_with_file_and_query(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(QueryFileError, match=message) as error:
        parse_sql_file(write(tmp_path, "broken", text))
    assert "broken.sql" in str(error.value)


def test_declarations_must_match_the_file(tmp_path: Path) -> None:
    write(tmp_path, "pairs", "-- name: first :val\nSELECT 1;\n-- name: second :val\nSELECT 2;\n")
    saved = dict(QueryFile.registry)
    try:

        class PairQueries(QueryFile, file="pairs"):
            first: Query
            third: Query

        with pytest.raises(QueryFileError, match=r"without a declaration \['second'\].*without a query \['third'\]"):
            PairQueries(tmp_path)
        with pytest.raises(QueryFileError, match="claimed twice"):

            class Again(QueryFile, file="pairs"):
                first: Query

        write(tmp_path, "orphan", "-- name: x :val\nSELECT 1;\n")
        with pytest.raises(QueryFileError, match=r"without a QueryFile class: \['orphan'\]"):
            db.load_all(tmp_path)
    finally:
        QueryFile.registry.clear()
        QueryFile.registry.update(saved)


class Row(msgspec.Struct):
    id: int
    label: str


async def test_calls_bind_keywords_and_convert_rows(conn: Connection, tmp_path: Path) -> None:
    queries = parse_sql_file(
        write(
            tmp_path,
            "calls",
            "-- name: pair :one\nSELECT :id::int AS id, :label::text AS label;\n"
            "-- name: pairs :many\nSELECT g AS id, 'n' || g AS label FROM generate_series(1, :n::int) AS g;\n"
            "-- name: echo :val\nSELECT :v::text;\n"
            "-- name: noop :exec\nSELECT 1 WHERE :x::int > 0;\n",
        )
    )
    assert await queries["pair"].one(conn, Row, label="a", id=7) == Row(7, "a")
    assert await queries["pairs"].many(conn, Row, n=2) == [Row(1, "n1"), Row(2, "n2")]
    assert await queries["echo"].val(conn, v="x") == "x"
    assert await queries["noop"].exec(conn, x=1) == "SELECT 1"
    with pytest.raises(TypeError, match=r"missing parameters \['label'\], unexpected \['name'\]"):
        await queries["pair"].one(conn, Row, id=1, name="b")
    with pytest.raises(TypeError, match="is a :val query, called as :many"):
        await queries["echo"].many(conn, Row, v="x")


class Swapped(msgspec.Struct):
    label: str
    id: int


async def test_rows_build_structs_only_when_the_columns_name_its_fields_in_order(
    conn: Connection, tmp_path: Path
) -> None:
    # Rows become Structs by position, so a select list in another order must not pass silently.
    queries = parse_sql_file(write(tmp_path, "order", "-- name: pair :one\nSELECT 1 AS id, 'a' AS label;\n"))
    with pytest.raises(TypeError, match=r"order\.pair selects \('id', 'label'\), which does not build Swapped"):
        await queries["pair"].one(conn, Swapped)
    assert await queries["pair"].one(conn, Row) == Row(1, "a")


def test_fragments_are_written_once_and_included(tmp_path: Path) -> None:
    write(tmp_path, "shared", "-- fragment: columns\n-- The row as shown.\nid, label\n")
    queries = parse_sql_file(
        write(
            tmp_path,
            "users_of",
            "-- fragment: only_mine\nowner = :owner\n"
            "-- name: mine :many\nSELECT /*include shared.columns*/ FROM t WHERE /*include only_mine*/;\n"
            "-- name: mine_again :many\nSELECT /*include shared.columns*/ FROM u WHERE /*include only_mine*/;\n",
        )
    )
    assert list(queries) == ["mine", "mine_again"]  # a fragment is not a query
    assert queries["mine"].sql == "-- users_of.mine\nSELECT id, label FROM t WHERE owner = $1;"
    assert queries["mine_again"].params == ("owner",)
    with pytest.raises(QueryFileError, match=r"broken\.sql: query a includes nowhere, which is not a fragment"):
        parse_sql_file(write(tmp_path, "broken", "-- name: a :one\nSELECT /*include nowhere*/;\n"))
    with pytest.raises(QueryFileError, match=r"includes shared\.missing"):
        parse_sql_file(write(tmp_path, "broken", "-- name: a :one\nSELECT /*include shared.missing*/;\n"))


async def test_a_projection_keeps_only_the_parts_it_names(conn: Connection, tmp_path: Path) -> None:
    [query] = parse_sql_file(
        write(
            tmp_path,
            "parts",
            "-- name: rows :many\n"
            "SELECT /*columns*/g AS n, g * 2 AS twice/*end columns*//*part extra*/, x.label/*end part*/\n"
            "FROM generate_series(1, :upto) AS g\n"
            "/*part extra*/LEFT JOIN (SELECT 1 AS n, 'one' AS label) AS x ON x.n = g/*end part*/ ORDER BY g;\n",
        )
    ).values()
    assert query.parts == {"extra"}
    as_written = await query.records(conn, upto=2)
    assert [tuple(row) for row in as_written] == [(1, 2, "one"), (2, 4, None)]
    kept = query.project(["n", "extra"])
    assert [tuple(row) for row in await kept.records(conn, upto=2)] == [(1, "one"), (2, None)]
    # A kept part is plain text in the projection, which has no parts left to leave out.
    assert "/*part" not in kept.sql
    assert kept.parts == frozenset()
    without = query.project(["twice"])
    assert "label" not in without.sql
    assert "JOIN" not in without.sql
    assert [tuple(row) for row in await without.records(conn, upto=2)] == [(2,), (4,)]
    with pytest.raises(KeyError, match="unknown"):
        query.project(["unknown"])
    with pytest.raises(QueryFileError, match="may not use parameters"):
        parse_sql_file(write(tmp_path, "broken", "-- name: a :one\nSELECT 1/*part p*/ + :x/*end part*/;\n"))


async def test_a_query_that_does_not_prepare_names_itself(conn: Connection, tmp_path: Path) -> None:
    broken = parse_sql_file(write(tmp_path, "drift", "-- name: old_column :many\nSELECT nickname FROM users;\n"))
    with pytest.raises(db.QueryPrepareError, match=r"query drift\.old_column does not prepare: column \"nickname\""):
        await db.prepare_all(conn, broken.values())
