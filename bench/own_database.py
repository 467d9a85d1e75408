"""A benchmark's database of its own, `<DATABASE_URL's name>_<suffix>`, made anew: call before django.setup()."""

import os
from urllib.parse import urlsplit, urlunsplit


def own_database(suffix: str) -> str:
    """Point DATABASE_URL at the benchmark's database, dropped and created empty; returns its URL."""
    import psycopg

    parts = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/redpackets"))
    name = f"{parts.path.strip('/')}_{suffix}"
    admin = urlunsplit((parts.scheme, parts.netloc, "/postgres", "", ""))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    os.environ["DATABASE_URL"] = urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
    return os.environ["DATABASE_URL"]
