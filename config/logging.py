"""Structured logs: one JSON object a line in production, plain console lines locally.

Every line logged while a request is served (and in the Celery tasks and webhook
deliveries it causes) carries `request_id`; the web server returns it as `X-Request-ID`. structlog
renders both its own events and the standard library's records (Django, Celery,
this code's `logging.getLogger`), so every line has one format.

No secret reaches a line: the values of keys named like a secret are replaced
before rendering (defence in depth: nothing logs a request body or headers).
"""

import logging
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from config.proxies import peer_is_trusted_proxy

REQUEST_ID_HEADER = "X-Request-ID"
# What an incoming X-Request-ID from a trusted proxy may look like; anything else gets a new id.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Keys whose values never appear in a log line, wherever they are in an event.
SECRET_KEYS = re.compile(r"pin|passw|passphrase|token|secret|authorization|cookie|signature|dsn|api_?key", re.I)
REDACTED = "[redacted]"

access_log = structlog.get_logger("request")


def _redact(value, depth: int = 0):
    if depth > 5:
        return value
    if isinstance(value, dict):
        return {k: REDACTED if SECRET_KEYS.search(str(k)) else _redact(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, depth + 1) for v in value]
    return value


def redact_secrets(logger, method_name, event_dict):
    """Values of secret-looking keys, at any depth of dicts and lists, become [redacted]."""
    return {
        k: REDACTED if SECRET_KEYS.search(k) and k not in _STRUCTLOG_KEYS else _redact(v) if k not in _STRUCTLOG_KEYS else v
        for k, v in event_dict.items()
    }


_STRUCTLOG_KEYS = {"event", "exc_info", "stack_info", "_record", "_from_structlog"}


def _shared_processors() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]


def logging_config(*, fmt: str, level: str) -> dict:
    """Django's LOGGING for `fmt` "json" or "console"; also points structlog at the standard library."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    # Tracebacks as plain text, never with the frames' local variables (a request's PIN is one).
    if fmt == "json":
        renderer = [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
    else:
        renderer = [structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "foreign_pre_chain": _shared_processors(),
                "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
            },
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # The access line below replaces Django's own "Bad Request: /path" warnings.
            "django.request": {"level": "ERROR"},
            "django.server": {"level": "ERROR"},
            # One line per webhook attempt comes from events.tasks; httpx would add its own.
            "httpx": {"level": "WARNING"},
        },
    }


def incoming_request_id(request) -> str:
    """The proxy's X-Request-ID when the peer is a trusted proxy and the id is well-formed; else a new one."""
    offered = request.headers.get(REQUEST_ID_HEADER, "")
    if offered and _REQUEST_ID.fullmatch(offered) and peer_is_trusted_proxy(request):
        return offered
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    """The id the lines logged here carry: the request's, or the task's cause (or own id); None outside both."""
    return structlog.contextvars.get_contextvars().get("request_id")


@contextmanager
def request_id_bound(request_id: str | None) -> Iterator[None]:
    """Lines logged inside carry `request_id`: work done later for a request (an event's relay and
    delivery) logs under the id of the request that caused it. None keeps the id bound now."""
    if request_id is None:
        yield
        return
    with structlog.contextvars.bound_contextvars(request_id=request_id):
        yield


class RequestLogMiddleware:
    """First in MIDDLEWARE: binds the request id for every line of the request, logs one access line."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request_id = incoming_request_id(request)
        request.request_id = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        try:
            response = self.get_response(request)
            response[REQUEST_ID_HEADER] = request_id
            access_log.log(
                logging.WARNING if response.status_code >= 500 else logging.INFO,
                "request",
                method=request.method,
                path=request.path,
                status=response.status_code,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                user=request.user.pk if getattr(request, "user", None) and request.user.is_authenticated else None,
            )
            return response
        finally:
            structlog.contextvars.clear_contextvars()


# --- Celery: the request id travels in a task header ---------------------------------------------------

TASK_HEADER = "request_id"


def add_request_id_header(headers: dict | None = None, **kwargs) -> None:
    """before_task_publish: a task enqueued while serving a request carries its id."""
    request_id = current_request_id()
    if request_id and headers is not None:
        headers.setdefault(TASK_HEADER, request_id)


def bind_task_context(task_id=None, task=None, **kwargs) -> None:
    """task_prerun: the task's lines carry the causing request's id (or the task's own id) and the task id."""
    structlog.contextvars.clear_contextvars()
    request_id = getattr(task.request, TASK_HEADER, None) if task is not None else None
    structlog.contextvars.bind_contextvars(request_id=request_id or task_id, task_id=task_id)


def clear_task_context(**kwargs) -> None:
    """task_postrun."""
    structlog.contextvars.clear_contextvars()
