"""Many rows in one statement, for the writes that post batches (the ledger, the outbox, the sweep).

`rows_sql` renders rows as a SELECT for `INSERT INTO t (...) {rows}` or
`WITH name (...) AS ({rows})`, from one JSON array of the rows bound as one parameter:
the statement's text is the same whatever the number of rows (psycopg parses it once,
PostgreSQL prepares it once), and encoding one JSON document costs a fraction of
binding a parameter per value or an array per column (whose text, for a JSON column,
psycopg escapes character by character). Rows come out in the order given.
"""

import json
import uuid
from collections.abc import Sequence
from datetime import datetime

from django.db import connection


def _json_value(value):
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not a column value rows_sql knows.")


def rows_sql(types: Sequence[str], rows: Sequence[Sequence]) -> tuple[str, list]:
    """(SQL, parameters) of `rows`: each a sequence of values of the PostgreSQL `types`, in
    order, as `db_value` prepares them, except a `jsonb` column's, which is the data itself."""
    document = json.dumps(rows, default=_json_value)
    if connection.vendor == "postgresql":
        columns = [f"r -> {i}" if type == "jsonb" else f"(r ->> {i})::{type}" for i, type in enumerate(types)]
        source = "jsonb_array_elements(%s::jsonb) WITH ORDINALITY AS t(r, n)"
        order = "n"
    else:
        columns = [f"value -> {i}" if type == "jsonb" else f"value ->> {i}" for i, type in enumerate(types)]
        source, order = "json_each(%s)", "key"
    # WHERE true: SQLite reads an ON CONFLICT after an INSERT's SELECT as a join's ON without it.
    return f"SELECT {', '.join(columns)} FROM {source} WHERE true ORDER BY {order}", [document]
