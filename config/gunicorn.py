"""Gunicorn's settings for the Procfile's web process: `gunicorn -c config/gunicorn.py config.wsgi:application`."""

import importlib
import logging.config
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gunicorn import glogging  # noqa: E402
from prometheus_client import multiprocess  # noqa: E402

from config.settings.base import METRICS_DIR, env_int  # noqa: E402  (sets PROMETHEUS_MULTIPROC_DIR)

bind = os.environ.get("WEB_BIND", "127.0.0.1:8000")
workers = env_int("WEB_WORKERS", 2)
threads = env_int("WEB_THREADS", 4)
# A worker that answers nothing for this long is replaced; no request runs near it
# (PostgreSQL's statement_timeout ends any query long before).
timeout = env_int("WEB_TIMEOUT", 30)
graceful_timeout = env_int("WEB_GRACEFUL_TIMEOUT", 10)
keepalive = env_int("WEB_KEEPALIVE", 5)
# Request line and headers: gunicorn's own bounds, stated (bodies: API_MAX_BODY_BYTES).
limit_request_line = 4094
limit_request_fields = 100
limit_request_field_size = 8190
# gunicorn's runtime control socket defaults to one path per user (~/.gunicorn): two servers on a
# machine would fight over it. Not used here.
control_socket_disable = True
# One structured access line per request comes from the application (config/logging.py).
accesslog = None


class StructuredLogger(glogging.Logger):
    """gunicorn's own lines (start, worker boot and exit, timeouts) in the application's log format."""

    def setup(self, cfg):
        super().setup(cfg)
        settings = importlib.import_module(os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.base"))
        logging.config.dictConfig(settings.LOGGING)
        for handler in list(self.error_log.handlers):
            self.error_log.removeHandler(handler)
        self.error_log.propagate = True


logger_class = StructuredLogger


def on_starting(server):
    """A new web server: drop the counter files of processes that no longer exist (an earlier run's).

    Files of live processes stay: a Celery worker that started first keeps counting into its own.
    """
    for path in Path(METRICS_DIR).glob("*.db"):
        pid = path.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            path.unlink(missing_ok=True)


def child_exit(server, worker):
    # A dead worker's counters stay in the sum; only its live-gauge files go.
    multiprocess.mark_process_dead(worker.pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
