"""The nemesis soak, short: bench/soak.py for about 60 s of load, on its own PostgreSQL cluster and Redis.

It kills a gunicorn worker and the Celery worker and restarts Redis and PostgreSQL while
clients send, claim and read; the checker over the API finds money conserved every 2 s,
and at the end every packet is settled once and `reconcile` is clean (see bench/soak.py).
"""

import os
import shutil
import subprocess
import sys

import pytest
from django.conf import settings

pytestmark = pytest.mark.slow

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

SERVERS = ("initdb", "pg_ctl", "redis-server")


def test_the_stack_survives_the_nemesis_with_no_violation():
    missing = [name for name in SERVERS if shutil.which(name) is None]
    if missing and not IN_CI:
        pytest.skip(f"needs {', '.join(missing)} to start private servers")

    result = subprocess.run([sys.executable, "bench/soak.py", "--seconds", "60", "--no-write"],
                            cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=900)

    print(result.stdout[-8_000:], result.stderr[-4_000:])
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, summary
    assert summary.startswith("SOAK RESULT: violations=0 ")
    assert " faults=4 " in summary
