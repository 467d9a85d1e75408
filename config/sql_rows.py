"""Many rows in one statement, for the writes that post batches (the ledger, the outbox, the sweep).

`rows_sql` renders rows as a set of rows for `INSERT INTO t (...) {rows}` or
`WITH name (...) AS ({rows})`, in the order given:
- a few rows (a claim's or a send's): a `VALUES` list, the cheapest for PostgreSQL to
  plan and run (its text, and so its prepared statement, is one per number of rows);
- more rows (a sweep's batch): one JSON array of the rows bound as one parameter, so the
  statement's text is the same whatever their number (psycopg parses it once, PostgreSQL
  prepares it once), and encoding one JSON document costs a fraction of binding a
  parameter per value or an array per column (whose text, for a JSON column, psycopg
  escapes character by character).
"""

import json
import uuid
from collections.abc import Sequence
from datetime import datetime

from django.db import connection

# Up to this many rows, a VALUES list: measured per single-row statement, the JSON form cost
# PostgreSQL about 0.15 ms more (parsing the document, a function scan, a join).
VALUES_UP_TO = 8


def _json_value(value):
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value rows_sql knows.")


def rows_sql(types: Sequence[str], rows: Sequence[Sequence]) -> tuple[str, list]:
    """(SQL, parameters) of `rows`: each a sequence of values of the PostgreSQL `types`, in
    order, as `db_value` prepares them, except a `jsonb` column's, which is the data itself."""
    postgresql = connection.vendor == "postgresql"
    if len(rows) <= VALUES_UP_TO:
        row = "(" + ", ".join(f"%s::{type}" if postgresql else "%s" for type in types) + ")"
        params = [json.dumps(value, default=_json_value) if type == "jsonb" else value
                  for values in rows for value, type in zip(values, types, strict=True)]
        return "VALUES " + ", ".join([row] * len(rows)), params
    document = json.dumps(rows, default=_json_value)
    if postgresql:
        columns = [f"r -> {i}" if type == "jsonb" else f"(r ->> {i})::{type}" for i, type in enumerate(types)]
        source, order = "jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS t(r, n)", "n"
    else:
        columns = [f"value -> {i}" if type == "jsonb" else f"value ->> {i}" for i, type in enumerate(types)]
        source, order = "json_each(%s)", "key"
    # WHERE true: SQLite reads an ON CONFLICT after an INSERT's SELECT as a join's ON without it.
    return f"SELECT {', '.join(columns)} FROM {source} WHERE true ORDER BY {order}", [document]
