"""The PostgreSQL backend's health check: no round trip on a connection just used, a real one after idleness."""

import pytest
from django.db import connections

from config.postgresql import base as backend

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def persistent():
    """A second connection to the test database, persistent and health-checked as in deployment."""
    conn = connections.create_connection("default")
    conn.settings_dict.update(CONN_MAX_AGE=60, CONN_HEALTH_CHECKS=True)
    yield conn
    conn.close()


def backend_pid(conn) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def kill(pid: int) -> None:
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


def next_request(conn) -> None:
    conn.close_if_unusable_or_obsolete()  # what request_started does


def test_a_connection_used_within_the_idle_limit_is_not_checked_with_a_query(persistent, monkeypatch):
    monkeypatch.setattr(backend, "HEALTH_CHECK_IDLE_SECONDS", 3600)
    kill(backend_pid(persistent))
    next_request(persistent)

    # A round trip would have found the session gone; this check sent none.
    assert persistent.is_usable()


def test_an_idle_connection_whose_session_was_killed_is_replaced_before_the_next_query(persistent, monkeypatch):
    monkeypatch.setattr(backend, "HEALTH_CHECK_IDLE_SECONDS", 0)
    pid = backend_pid(persistent)
    kill(pid)
    next_request(persistent)

    new_pid = backend_pid(persistent)  # no error: the check found the dead session and reconnected

    assert new_pid != pid


def test_a_connection_that_saw_an_error_is_checked_for_real(persistent, monkeypatch):
    monkeypatch.setattr(backend, "HEALTH_CHECK_IDLE_SECONDS", 3600)
    pid = backend_pid(persistent)
    kill(pid)
    with pytest.raises(Exception):
        backend_pid(persistent)
    next_request(persistent)  # Django flagged the error: the real check closes the dead connection

    assert backend_pid(persistent) != pid
