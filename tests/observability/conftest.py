"""The whole stack as the Procfile starts it (gunicorn -c config/gunicorn.py, a Celery worker with beat),
against the test's own database, with its logs and metric files in the test's temporary directory."""

import os
import sys
import time
import uuid

import pytest
import requests
from django.conf import settings

from tests.processes import Proc, database_url, free_port


class Stack:
    def __init__(self, tmp_path):
        self.tmp_path = tmp_path
        self.var_dir = tmp_path / "var"
        self.metrics_dir = self.var_dir / "metrics"
        self.metrics_dir.mkdir(parents=True)
        self.tag = uuid.uuid4().hex[:8]
        self.started: list[Proc] = []
        self.port: int | None = None

    def env(self, application_name: str, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.test",
            "DATABASE_URL": database_url(f"{application_name}-{self.tag}"),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "VAR_DIR": str(self.var_dir),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "PYTHONUNBUFFERED": "1",
            "API_THROTTLE": "off",
            "WEB_GRACEFUL_TIMEOUT": "2",
        }
        env.pop("CACHE_URL", None)
        env.update(extra)
        return env

    def start(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        proc = Proc(name, args, env, self.tmp_path / f"{len(self.started)}-{name}.log")
        self.started.append(proc)
        return proc

    def web(self, workers: int = 2, **extra: str) -> Proc:
        """gunicorn exactly as the Procfile runs it, on a free port."""
        self.port = free_port()
        env = self.env("web", WEB_BIND=f"127.0.0.1:{self.port}", WEB_WORKERS=str(workers), **extra)
        proc = self.start("web", [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.py",
                                  "config.wsgi:application"], env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert proc.alive(), proc.output()
            try:
                if requests.get(self.url("/healthz"), timeout=1).status_code == 200:
                    return proc
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError("gunicorn did not answer /healthz within 30 s:\n" + proc.output())

    def worker(self, **extra: str) -> Proc:
        proc = self.start(
            "worker",
            [sys.executable, "-m", "celery", "-A", "config", "worker", "--beat", "--loglevel=info", "--concurrency=1",
             "--without-gossip", "--without-mingle", "-n", f"obs-{self.tag}@%h",
             "--schedule", str(self.var_dir / "beat-schedule")],
            self.env("worker", **extra),
        )
        proc.wait_until(" ready.", timeout=30)
        return proc

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        for proc in reversed(self.started):
            proc.stop()


@pytest.fixture
def stack(tmp_path):
    stack = Stack(tmp_path)
    try:
        yield stack
    finally:
        stack.stop()
        for proc in stack.started:
            print(f"----- {proc.name} (exit code {proc.process.returncode}) -----")
            print(proc.output()[-10_000:])
