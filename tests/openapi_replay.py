"""Every response the suite's own test clients get is checked against the served OpenAPI schema.

A pytest plugin (registered in tests/conftest.py). While the suite runs, it records each
request made through Django's and DRF's in-process test clients (`client`, `APIClient`)
with the response it got. The last test of the run,
tests/test_openapi_replay.py::test_every_recorded_response_matches_the_schema, replays them
through openapi-core against the schema served at /api/schema/: a response that its
documented operation does not describe (status, headers, body) fails it. An /api/ path that
no operation documents (an unknown path, a method the path does not take) must still answer
with the generic error envelope of the schema. The counts are printed at the end of the run.

Requests to the schema and docs pages and outside /api/ (admin, static) are not recorded.
Processes started by tests (gunicorn, the fuzz's own WSGI calls) are not seen here: the
fuzz checks its responses against the same schema itself.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from unittest import mock

import pytest
from django.test.client import ClientHandler, FakePayload

SKIPPED_PREFIXES = ("/api/schema", "/api/docs")


@dataclass(frozen=True)
class Exchange:
    test: str
    method: str
    path: str
    query: str
    request_headers: dict[str, str]
    request_body: bytes
    request_content_type: str
    status: int
    response_headers: dict[str, str]
    response_body: bytes

    def label(self) -> str:
        return f"{self.method} {self.path}{'?' + self.query if self.query else ''} -> {self.status} ({self.test})"


class ResponseRecorder:
    def __init__(self) -> None:
        self.exchanges: list[Exchange] = []
        self.current_test = "?"
        self.summary: list[str] = []

    # --- recording ------------------------------------------------------------------

    def wrap(self, original):
        recorder = self

        def call(handler, environ):
            path = environ.get("PATH_INFO", "")
            if not path.startswith("/api/") or path.startswith(SKIPPED_PREFIXES):
                return original(handler, environ)
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = environ["wsgi.input"].read(length) if length else b""
            environ["wsgi.input"] = FakePayload(body)
            response = original(handler, environ)
            recorder.record(environ, body, response)
            return response

        return call

    def record(self, environ: dict, body: bytes, response) -> None:
        headers = {
            key[5:].replace("_", "-").title(): value for key, value in environ.items() if key.startswith("HTTP_")
        }
        if response.streaming:
            return
        self.exchanges.append(
            Exchange(
                test=self.current_test,
                method=environ["REQUEST_METHOD"],
                path=environ["PATH_INFO"],
                query=environ.get("QUERY_STRING", ""),
                request_headers=headers,
                request_body=body,
                request_content_type=environ.get("CONTENT_TYPE", ""),
                status=response.status_code,
                response_headers=dict(response.items()),
                response_body=response.content,
            )
        )

    # --- pytest hooks ---------------------------------------------------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session):
        self._patch = mock.patch.object(ClientHandler, "__call__", self.wrap(ClientHandler.__call__))
        self._patch.start()

    def pytest_sessionfinish(self, session):
        self._patch.stop()

    def pytest_runtest_setup(self, item):
        self.current_test = item.nodeid

    def pytest_collection_modifyitems(self, config, items):
        # The replay goes last, after every test that records.
        last = [item for item in items if item.nodeid.endswith(REPLAY_TEST)]
        items[:] = [item for item in items if item not in last] + last

    def pytest_terminal_summary(self, terminalreporter):
        if self.summary:
            terminalreporter.section("OpenAPI replay of the suite's responses")
            for line in self.summary:
                terminalreporter.write_line(line)


REPLAY_TEST = "test_openapi_replay.py::test_every_recorded_response_matches_the_schema"


def replay(exchanges: list[Exchange], spec: dict) -> tuple[Counter, list[str]]:
    """Validate each exchange; returns the counts by outcome and the mismatches."""
    from openapi_core import OpenAPI
    from openapi_core.templating.paths.exceptions import OperationNotFound, PathNotFound
    from openapi_core.testing import MockRequest, MockResponse
    from openapi_schema_validator import OAS30Validator

    openapi = OpenAPI.from_dict(spec)
    envelope_validator = OAS30Validator({"$ref": "#/components/schemas/ErrorEnvelope", "components": spec["components"]})
    counts: Counter = Counter()
    mismatches: list[str] = []
    for exchange in exchanges:
        path = exchange.path.rstrip("/") if exchange.path.startswith("/api/v1/") else exchange.path
        request = MockRequest(
            "http://testserver", exchange.method, path, headers=exchange.request_headers,
            data=exchange.request_body, content_type=exchange.request_content_type,
        )
        content_type = exchange.response_headers.get("Content-Type", "")
        response = MockResponse(
            exchange.response_body, exchange.status, headers=exchange.response_headers, content_type=content_type
        )
        try:
            openapi.validate_response(request, response)
        except (PathNotFound, OperationNotFound):
            # No operation documents it: it must be the generic error envelope.
            errors = _envelope_errors(envelope_validator, exchange, content_type)
            counts["undocumented path or method: error envelope checked"] += 1
            if errors:
                mismatches.append(f"{exchange.label()}: not the error envelope: {errors}")
            continue
        except Exception as exc:  # openapi-core's validation errors, each with its cause
            mismatches.append(f"{exchange.label()}: {_causes(exc)}")
            counts["documented operation: mismatch"] += 1
            continue
        counts["documented operation: valid"] += 1
    return counts, mismatches


def _causes(exc: Exception) -> str:
    """The schema errors behind an openapi-core validation error, each at its JSON path."""
    found = []
    for error in (exc, exc.__cause__):
        for schema_error in getattr(error, "schema_errors", None) or ():
            where = "/".join(str(p) for p in schema_error.absolute_path) or "(body)"
            found.append(f"{where}: {schema_error.message[:200]}")
    return f"{type(exc).__name__}: " + ("; ".join(found) if found else str(exc.__cause__ or exc)[:400])


def _envelope_errors(validator, exchange: Exchange, content_type: str) -> str:
    if exchange.status < 400:
        return f"status {exchange.status}"
    if not content_type.startswith("application/json"):
        return f"content type {content_type!r}"
    try:
        body = json.loads(exchange.response_body)
    except ValueError as exc:
        return f"not JSON: {exc}"
    return "; ".join(error.message for error in validator.iter_errors(body))
