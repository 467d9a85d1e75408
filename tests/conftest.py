"""Shared fixtures. The suite runs on PostgreSQL and Redis when they are there.

In CI (CI=true) a missing PostgreSQL or Redis fails the run at once; elsewhere
the tests marked `postgres` or `redis` are skipped with the reason printed.
"""

import os

import pytest
from django.conf import settings
from django.db import connection
from rest_framework.test import APIClient

from tests.factories import UserFactory, login
from tests.openapi_replay import ResponseRecorder
from tests.processes import Stack

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def pytest_configure(config):
    config.pluginmanager.register(ResponseRecorder(), "openapi-replay")


def _redis_reachable() -> bool:
    url = settings.CELERY_BROKER_URL
    if not url.startswith("redis://"):
        return False
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=2).ping())
    except (OSError, redis.RedisError):
        return False


def _services() -> dict[str, bool]:
    return {"postgres": connection.vendor == "postgresql", "redis": _redis_reachable()}


def pytest_collection_modifyitems(config, items):
    services = _services()
    missing = [name for name, up in services.items() if not up]
    if missing and IN_CI:
        pytest.exit(f"CI needs {' and '.join(missing)}; start them (see .ci/run).", returncode=1)
    for item in items:
        for name in missing:
            if name in item.keywords:
                item.add_marker(pytest.mark.skip(reason=f"needs {name}, which is not reachable here"))


def pytest_report_header(config):
    services = _services()
    return [f"database: {connection.vendor} ({settings.DATABASES['default']['NAME']}); "
            f"broker: {settings.CELERY_BROKER_URL}; redis reachable: {services['redis']}"]


@pytest.fixture
def api() -> APIClient:
    return APIClient()


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def user_api(user) -> APIClient:
    return login(user)


@pytest.fixture
def stack(tmp_path):
    """gunicorn and a Celery worker as the Procfile starts them; all stopped at the end, their logs printed."""
    stack = Stack(tmp_path)
    try:
        yield stack
    finally:
        stack.stop()
        for proc in stack.started:
            print(f"----- {proc.name} (exit code {proc.process.returncode}) -----")
            print(proc.output()[-10_000:])
