"""PostgreSQL backend whose connection health check costs a round trip only after idleness.

Django's CONN_HEALTH_CHECKS sends `SELECT 1` before the first query of every
request on a persistent connection: one round trip per request, on the trivial
read a third of its queries. A connection that served a query within the last
HEALTH_CHECK_IDLE_SECONDS, and that psycopg has not seen break, is used as is;
one idle for longer (where a server restart, a failover or a killed session is
likely to have hit it) is checked as before. A connection that fails a query is
flagged by Django and checked for real at the end of that request, as before.
"""

import time

from django.db.backends.postgresql import base

HEALTH_CHECK_IDLE_SECONDS = 1.0


class DatabaseWrapper(base.DatabaseWrapper):
    _used_at = float("-inf")

    def create_cursor(self, name=None):
        self._used_at = time.monotonic()
        return super().create_cursor(name)

    def is_usable(self):
        recently_used = time.monotonic() - self._used_at < HEALTH_CHECK_IDLE_SECONDS
        if recently_used and not self.errors_occurred and self.connection is not None and not self.connection.broken:
            return True
        return super().is_usable()
