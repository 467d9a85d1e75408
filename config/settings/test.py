"""Test settings: the real database and broker from the environment, fast hashing."""

import os

import dj_database_url

from config.settings.base import *  # noqa: F403

# PBKDF2 at full strength costs ~0.3 s per password or PIN; tests create hundreds.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
SANDBOX_TOPUPS = True
# Throttle counters per test process, so no run inherits another's; a process
# given CACHE_URL explicitly (the fault drills' servers) uses that Redis instead.
if not os.environ.get("CACHE_URL"):
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


def _reachable(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


# The suite runs against the real services when they are there: PostgreSQL and
# Redis on their usual local ports unless DATABASE_URL / CELERY_BROKER_URL say
# otherwise. Without them it falls back to SQLite and the filesystem broker, and
# the tests that need PostgreSQL or Redis say that they were skipped (in CI,
# tests/conftest.py fails the run instead).
if "DATABASE_URL" not in os.environ and _reachable("127.0.0.1", 5432):
    DATABASES["default"] = dj_database_url.parse(  # noqa: F405
        "postgres://postgres@127.0.0.1:5432/redpackets", conn_max_age=0, conn_health_checks=True
    )
DATABASES["default"]["CONN_MAX_AGE"] = 0  # noqa: F405
if "CELERY_BROKER_URL" not in os.environ and _reachable("127.0.0.1", 6379):
    CELERY_BROKER_URL = "redis://127.0.0.1:6379/15"
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
