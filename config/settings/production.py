"""Production: secrets and hosts must come from the environment; HTTPS only."""

import os

from config.logging import logging_config
from config.settings.base import *  # noqa: F403
from config.settings.base import LOG_LEVEL, PIN_KEY_DERIVED_ID, PIN_RETIRED_KEYS, env_bool, env_int, pin_key_derived_from

SECRET_KEY = os.environ["DJANGO_SECRET_KEY"]
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "").split(",") if h.strip()]

# Staff log in to the admin with a password and a TOTP code.
ADMIN_REQUIRE_OTP = env_bool("ADMIN_REQUIRE_OTP", True)

# Real money only comes from a payment provider.
SANDBOX_TOPUPS = env_bool("SANDBOX_TOPUPS", False)
DEMO_LOGINS = env_bool("DEMO_LOGINS", False)
# Webhooks only to https URLs of public addresses.
WEBHOOK_ALLOW_PRIVATE_URLS = env_bool("WEBHOOK_ALLOW_PRIVATE_URLS", False)

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True

# Its own secret (wallets/pins.py), required: the deploy checks refuse a missing one
# (`wallets.E004`), a short one or DJANGO_SECRET_KEY reused (`E001`-`E003`). Without it
# the processes still start, for a client that runs the service with only the contract's
# variables: its PINs are keyed by a key derived from DJANGO_SECRET_KEY under the id
# PIN_KEY_DERIVED_ID, and setting PIN_KEY later rotates every PIN to it on its next use.
if os.environ.get("PIN_KEY"):
    PIN_KEY = os.environ["PIN_KEY"]
    PIN_RETIRED_KEYS = {PIN_KEY_DERIVED_ID: pin_key_derived_from(SECRET_KEY), **PIN_RETIRED_KEYS}
else:
    PIN_KEY, PIN_KEY_ID = pin_key_derived_from(SECRET_KEY), PIN_KEY_DERIVED_ID
# Probes and scrapes reach the processes directly, over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
METRICS_TOKEN_REQUIRED = True

# One JSON object a line for the log pipeline.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "json")
LOGGING = logging_config(fmt=LOG_FORMAT, level=LOG_LEVEL)
