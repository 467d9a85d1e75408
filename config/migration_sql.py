"""Raw SQL for migrations that only PostgreSQL runs (triggers and functions).

The embedded SQLite database has none of these guards; it relies on the
service code and the CHECK constraints, which hold on every database.
"""

from django.db import migrations


def run_sql_on_postgresql(forward: str, backward: str) -> migrations.RunPython:
    def apply(sql: str):
        def run(apps, schema_editor):
            if schema_editor.connection.vendor == "postgresql":
                # params=None: the SQL is sent as written ('%' is not a placeholder).
                schema_editor.execute(sql, params=None)

        return run

    return migrations.RunPython(apply(forward), apply(backward))
