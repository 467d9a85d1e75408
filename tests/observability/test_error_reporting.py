"""Sentry is off without SENTRY_DSN; with it, an unhandled error is reported without the request's secrets."""

import json

import pytest
import sentry_sdk
from django.urls import path
from rest_framework.decorators import api_view, authentication_classes, permission_classes

from config.error_reporting import error_reporting_init


@api_view(["POST"])
@authentication_classes([])
@permission_classes([])
def broken(request):
    request.data  # noqa: B018  (the body is read, as every endpoint does)
    raise RuntimeError("boom")


urlpatterns = [path("broken", broken)]


def test_without_a_dsn_nothing_is_set_up():
    assert error_reporting_init("") is False


@pytest.mark.urls(__name__)
def test_an_unhandled_error_reaches_sentry_without_the_pin_password_or_token(client):
    sent = []

    class Capture(sentry_sdk.transport.Transport):
        def capture_envelope(self, envelope):
            sent.append(envelope.serialize().decode(errors="replace"))

    assert error_reporting_init("https://public@sentry.invalid/1", transport=Capture) is True
    try:
        client.raise_request_exception = False
        response = client.post("/broken", json.dumps({"pin": "975318", "password": "Pw-horse-987"}),
                               content_type="application/json", HTTP_AUTHORIZATION="Bearer tok-5e5e5e5e")
        sentry_sdk.flush()
    finally:
        sentry_sdk.init(dsn="")  # off again for the rest of the suite

    assert response.status_code == 500
    report = "\n".join(sent)
    assert "RuntimeError" in report and "boom" in report
    for secret in ("975318", "Pw-horse-987", "tok-5e5e5e5e"):
        assert secret not in report
