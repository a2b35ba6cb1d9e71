"""Registry statements: written with SQLAlchemy Core, compiled once, run on psycopg directly.

Statements are built against the models (so they follow the schema and read like the rest of
the project) and compiled for PostgreSQL when their module is imported. A call runs them on
its pooled connection's psycopg cursor. SQLAlchemy's execution layer (cache key, parameter and
result processing) cost as much CPU per statement as psycopg itself: a transaction of five
statements took 680-712 µs of CPU through `Connection.execute` and 440-453 µs like this
(README, Performance).

What SQLAlchemy's execution did that this does instead:
- literal values in a statement (`status == "active"`) are bind parameters with defaults,
  merged under the caller's values;
- JSONB values are passed as `Jsonb(...)` by the caller, and so are values of columns with a
  Python-side default (`id`): an INSERT that leaves one out fails at import;
- rows are named tuples (`row.id`); `Rows` has the few result methods the steps use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg.rows import namedtuple_row
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.sql.compiler import SQLCompiler

from consumer.participants.builtin.models import CreatedByStep

_DIALECT = psycopg_dialect()


@dataclass(frozen=True, slots=True)
class Sql:
    """One statement's text (psycopg's `%(name)s` parameters) and its literals' values."""

    text: str
    defaults: Mapping[str, Any]

    def bind(self, params: Mapping[str, Any] | None) -> Mapping[str, Any]:
        if not self.defaults:
            return params or {}
        return {**self.defaults, **(params or {})}


def compiled(statement: sa.ClauseElement, columns: Sequence[str] | None = None) -> Sql:
    """`statement` compiled for PostgreSQL; `columns`: those an INSERT without values sets."""
    result = statement.compile(dialect=_DIALECT, column_keys=list(columns) if columns else None)
    assert isinstance(result, SQLCompiler)
    unset = [c.key for c in getattr(result, "insert_prefetch", ()) if c.key not in (columns or ())]
    if unset:  # SQLAlchemy would call the model's default; nothing does here
        raise ValueError(f"give the values of {', '.join(unset)}: {result}")
    defaults = {result.bind_names[bind]: bind.effective_value for bind in result.binds.values()
                if not bind.required and bind.effective_value is not None}
    return Sql(str(result), defaults)


def insert(model: type[Any], *columns: str) -> Sql:
    """INSERT of one row of `model`, the values given by column name."""
    return compiled(sa.insert(model), columns)


_DELETES: dict[type[Any], Sql] = {}


def delete_created_by(model: type[CreatedByStep]) -> Sql:
    """DELETE of the rows of `model` a key created (parameter `key`)."""
    found = _DELETES.get(model)
    if found is None:
        found = _DELETES[model] = compiled(
            sa.delete(model).where(model.created_by_key == sa.bindparam("key")))
    return found


class Rows:
    """The rows a statement returned, fetched at once (the cursor runs the next statement)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Any]) -> None:
        self._rows = rows

    def __iter__(self) -> Any:
        return iter(self._rows)

    def one_or_none(self) -> Any | None:
        if len(self._rows) > 1:
            raise LookupError(f"one row expected, {len(self._rows)} found")
        return self._rows[0] if self._rows else None

    def one(self) -> Any:
        row = self.one_or_none()
        if row is None:
            raise LookupError("one row expected, none found")
        return row

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalar(self) -> Any | None:
        return self._rows[0][0] if self._rows else None

    def scalars(self) -> list[Any]:
        return [row[0] for row in self._rows]


class Registry:
    """The statements of one call, on its connection's cursor, in its transaction."""

    __slots__ = ("_cursor",)

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        self._cursor = connection.cursor(row_factory=namedtuple_row)

    def execute(self, sql: Sql, params: Mapping[str, Any] | None = None) -> Rows:
        cursor = self._cursor
        cursor.execute(sql.text, sql.bind(params))
        return Rows(cursor.fetchall() if cursor.description is not None else [])

    def execute_many(self, sql: Sql, rows: Iterable[Mapping[str, Any]]) -> None:
        self._cursor.executemany(sql.text, [sql.bind(row) for row in rows])

    def scalar(self, sql: Sql, params: Mapping[str, Any] | None = None) -> Any | None:
        return self.execute(sql, params).scalar()

    def scalars(self, sql: Sql, params: Mapping[str, Any] | None = None) -> list[Any]:
        return self.execute(sql, params).scalars()
