"""Set-based inserts that skip existing keys (notifications, the e-mail outbox)."""
from __future__ import annotations

import json
from typing import Literal, overload

from sqlalchemy import JSON, Integer, Table, bindparam, text

from ..extensions import Session, rowcount


@overload
def insert_new(db: Session, table: Table, rows: list[dict], constants: dict | None = None, *,
               keys: Literal[True] = ...) -> list[str]: ...
@overload
def insert_new(db: Session, table: Table, rows: list[dict], constants: dict | None = None, *,
               keys: Literal[False]) -> int: ...
def insert_new(db: Session, table: Table, rows: list[dict], constants: dict | None = None, *,
               keys: bool = True) -> list[str] | int:
    """INSERT ``rows`` into ``table``, skipping those whose ``key`` exists; returns the new
    keys (``keys=False``: only how many, which spares reading them back).

    Set-based: the rows travel as one JSON document that the database unpacks
    (``json_to_recordset`` / ``json_each``), so a sweep that changes 100,000
    clocks makes one statement, not 100,000 parameter sets, and no driver
    limit on parameters applies. ``constants`` (e.g. ``created_at``) are the
    same for every row and bound with their column's type.
    """
    if not rows:
        return [] if keys else 0
    names = list(rows[0])
    constants = constants or {}
    unknown = [name for name in names + list(constants) if name not in table.c]
    if unknown:  # the names go into the SQL text: only the table's own columns may
        raise ValueError(f"unknown columns for {table.name}: {unknown}")
    postgres = db.get_bind().dialect.name == "postgresql"
    if postgres:
        source = ("FROM json_to_recordset(CAST(:rows AS json)) AS r("
                  + ", ".join(f'"{name}" {_pg_type(table.c[name])}' for name in names) + ")")
        picked = [f'r."{name}"' for name in names]
    else:
        source = "FROM json_each(:rows) WHERE true"  # (WHERE: SQLite's upsert-after-SELECT rule)
        picked = [f"json_extract(value, '$.{name}')" for name in names]
    columns = names + list(constants)
    statement = text(
        f'INSERT INTO {table.name} (' + ", ".join(f'"{c}"' for c in columns) + ") "
        + "SELECT " + ", ".join(picked + [f":{c}" for c in constants]) + f" {source} "
        + 'ON CONFLICT ("key") DO NOTHING' + (' RETURNING "key"' if keys else "")
    ).bindparams(bindparam("rows", json.dumps(rows, separators=(",", ":"))),
                 *[bindparam(c, v, type_=table.c[c].type) for c, v in constants.items()])
    result = db.execute(statement)
    return list(result.scalars()) if keys else rowcount(result)


def _pg_type(column) -> str:
    if isinstance(column.type, JSON):
        return "json"
    return "integer" if isinstance(column.type, Integer) else "text"
