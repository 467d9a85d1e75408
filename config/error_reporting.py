"""Optional error reporting to Sentry: on when SENTRY_DSN is set, nothing at all otherwise.

Events never carry a request body (PINs, passwords and passphrases travel in bodies),
cookies or user details (sentry-sdk's default), and the scrubber also blanks our own
secret-looking keys.
"""

import os

SCRUBBED_KEYS = ["pin", "current_pin", "passphrase", "password", "token", "secret", "authorization", "x-request-id"]


def error_reporting_init(dsn: str | None = None, **options) -> bool:
    dsn = dsn if dsn is not None else os.environ.get("SENTRY_DSN", "")
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.scrubber import DEFAULT_DENYLIST, EventScrubber

    sentry_sdk.init(
        dsn=dsn,
        environment=os.environ.get("SENTRY_ENVIRONMENT", "production"),
        integrations=[DjangoIntegration(), CeleryIntegration()],
        max_request_body_size="never",
        event_scrubber=EventScrubber(denylist=[*DEFAULT_DENYLIST, *SCRUBBED_KEYS], recursive=True),
        traces_sample_rate=float(os.environ.get("SENTRY_TRACES_SAMPLE_RATE", "0")),
        **options,
    )
    return True
