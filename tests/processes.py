"""Real processes for tests: servers and workers against the test's own database.

Each runs in its own process group with its output in a file, so a test can
SIGKILL a whole worker (pool children and embedded beat too) like a machine
crash, and always stop everything it started.
"""

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg
import requests
from django.conf import settings
from django.db import connection

REPO_ROOT = Path(__file__).resolve().parents[1]


def database_url(application_name: str = "") -> str:
    """The test database (NAME is the test database's name here), tagged with an application_name."""
    db = connection.settings_dict
    credentials = quote(db["USER"] or "", safe="")
    if db["PASSWORD"]:
        credentials += ":" + quote(db["PASSWORD"], safe="")
    host = db["HOST"] or "localhost"
    port = f":{db['PORT']}" if db["PORT"] else ""
    url = f"postgres://{credentials}@{host}{port}/{quote(db['NAME'], safe='')}"
    return f"{url}?application_name={quote(application_name)}" if application_name else url


def control_connection(application_name: str) -> psycopg.Connection:
    """A connection of the test's own, outside Django, for locks and pg_terminate_backend."""
    db = connection.settings_dict
    return psycopg.connect(
        host=db["HOST"] or "localhost", port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"] or None,
        dbname=db["NAME"], application_name=application_name, autocommit=True,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Proc:
    """A subprocess in its own process group, its output in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path):
        self.name, self.log_path = name, log_path
        self.log = open(log_path, "wb")
        self.process = subprocess.Popen(
            args, cwd=REPO_ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_until(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return
            assert self.alive(), f"{self.name} exited with {self.process.returncode}"
            time.sleep(0.1)
        raise AssertionError(f"{self.name} did not log {text!r} within {timeout} s")

    def signal(self, signum: int) -> None:
        if self.alive():
            os.killpg(self.pid, signum)

    def kill(self) -> None:
        """SIGKILL the whole group (worker, pool child, embedded beat): a machine crash."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            try:
                os.killpg(self.pid, signal.SIGCONT)  # in case a drill left it stopped
                os.killpg(self.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                pass
        self.kill()  # the group's stragglers too
        self.log.close()


class Stack:
    """gunicorn as the Procfile starts it (-c config/gunicorn.py) and a Celery worker with beat, against the
    test's own database, with their logs and metric files in the test's temporary directory."""

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

    def webhooks_worker(self, **extra: str) -> Proc:
        """The Procfile's `webhooks` worker: the delivery queue only, on threads."""
        proc = self.start(
            "webhooks",
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "webhooks", "--pool", "threads",
             "--loglevel=info", "--concurrency=2", "--without-gossip", "--without-mingle", "-n", f"hooks-{self.tag}@%h"],
            self.env("webhooks", **extra),
        )
        proc.wait_until(" ready.", timeout=30)
        return proc

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        for proc in reversed(self.started):
            proc.stop()
