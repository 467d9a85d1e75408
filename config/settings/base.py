"""Settings shared by every environment; the defaults are the embedded local run.

Everything a deployment changes comes from the environment (see README's table).
"""

import ipaddress
import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from celery.schedules import crontab

from config.error_reporting import error_reporting_init
from config.logging import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = Path(os.environ.get("VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "insecure-local-only-key-change-me-in-production-0123456789")
DEBUG = env_bool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = [h.strip() for h in os.environ.get("DJANGO_ALLOWED_HOSTS", "*").split(",") if h.strip()]

INSTALLED_APPS = [
    "config.apps.OperatorsAdminConfig",  # django.contrib.admin with the operators' site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "axes",
    "wallets",
    "redpackets",
    "observability",
    "events",
    "client",
]

MIDDLEWARE = [
    "config.logging.RequestLogMiddleware",
    "config.request_limits.BodyLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
CSRF_FAILURE_VIEW = "config.errors.csrf_failure"
WSGI_APPLICATION = "config.wsgi.application"
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
# PostgreSQL in every real deployment; an embedded SQLite file otherwise. SQLite
# runs in WAL mode and takes the write lock when a transaction begins
# (IMMEDIATE), so concurrent writers queue on the busy timeout instead of
# failing with "database is locked" halfway through a transfer.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        conn_health_checks=True,
    )
}
# Prepared statements on PostgreSQL: the claim path's statements are planned once
# per connection instead of on every call (a third off a claim's time here).
# Switch off behind a transaction-pooling PgBouncer, which cannot keep them.
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env_bool("DB_PREPARED_STATEMENTS", True):
    DATABASES["default"].setdefault("OPTIONS", {}).update(server_side_binding=True, prepare_threshold=5)
# Nothing waits on PostgreSQL forever (web and worker alike; a process may set its own):
# a statement, a lock wait and a transaction left open by a stuck or dead client are
# ended by the server, and TCP keepalives notice a peer that vanished. A lock or
# statement timeout answers 503 service_unavailable (config/errors.py). Behind a
# transaction-pooling PgBouncer, set these on the role instead (ALTER ROLE ... SET).
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _timeouts = {
        "statement_timeout": env_int("DB_STATEMENT_TIMEOUT_MS", 20_000),
        "lock_timeout": env_int("DB_LOCK_TIMEOUT_MS", 10_000),
        "idle_in_transaction_session_timeout": env_int("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", 60_000),
    }
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["options"] = " ".join(
        [_options.get("options", ""), *(f"-c {name}={ms}" for name, ms in _timeouts.items())]
    ).strip()
    _options.setdefault("connect_timeout", env_int("DB_CONNECT_TIMEOUT", 5))
    _options.update(keepalives=1, keepalives_idle=30, keepalives_interval=10, keepalives_count=3)
# Last: the checks above look for Django's own engine name.
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Health checks without a round trip on a connection used within the last second.
    DATABASES["default"]["ENGINE"] = "config.postgresql"
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

# Read replica (config/replicas.py): read-only endpoints read from it; writes, money
# and a user's reads within REPLICA_READ_YOUR_WRITES_SECONDS of their own write do not.
REPLICA_READ_YOUR_WRITES_SECONDS = env_int("REPLICA_READ_YOUR_WRITES_SECONDS", 5)
if os.environ.get("DATABASE_REPLICA_URL"):
    DATABASES["replica"] = {
        **DATABASES["default"],
        **dj_database_url.parse(os.environ["DATABASE_REPLICA_URL"], conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
                                conn_health_checks=True),
        "ENGINE": DATABASES["default"]["ENGINE"],
        "OPTIONS": DATABASES["default"].get("OPTIONS", {}),
        "TEST": {"MIRROR": "default"},
    }
    DATABASE_ROUTERS = ["config.replicas.PrimaryReplicaRouter"]
    MIDDLEWARE.append("config.replicas.RecordWritesMiddleware")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (throttle counters) --------------------------------------------------
CACHE_URL = os.environ.get("CACHE_URL", "")
_broker = os.environ.get("CELERY_BROKER_URL", "")
if not CACHE_URL and _broker.startswith(("redis://", "rediss://")):
    CACHE_URL = _broker
if CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            # A hung or unreachable Redis costs a request at most these timeouts
            # (redis-py's default is 5 s each); the throttle then fails open
            # (config/throttling.py), so the API keeps answering without it.
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth -----------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

# The admin: TOTP two-factor login for staff where required (production settings
# turn it on), and throttled admin logins (django-axes). Axes watches the admin's
# login only: the API's /auth/token has its own rate limit and error envelope.
ADMIN_REQUIRE_OTP = env_bool("ADMIN_REQUIRE_OTP", False)
OTP_TOTP_ISSUER = "Red packets"
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_ONLY_ADMIN_SITE = True
AXES_HANDLER = "config.admin.AdminLoginAttemptsHandler"
AXES_FAILURE_LIMIT = env_int("ADMIN_LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("ADMIN_LOGIN_COOLOFF_MINUTES", 15))
# Locked per username and per client address, whichever reaches the limit first.
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
# The client's address behind TRUSTED_PROXIES, by the same rule as the request id's trust.
AXES_CLIENT_IP_CALLABLE = "config.proxies.client_address"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "admin/login_locked_out.html"
AXES_VERBOSE = False  # no banner at every start; lockouts are still logged

# The admin dashboard's figures, section by section (config/dashboard.py).
ADMIN_DASHBOARD_FIGURES = [
    "redpackets.admin.dashboard_figures",
    "config.dashboard.events_backlog_figures",
    "wallets.admin.dashboard_figures",
]

# Logging in again on a new device revokes the oldest token beyond this many.
AUTH_TOKENS_PER_USER = env_int("AUTH_TOKENS_PER_USER", 10)
REST_KNOX = {
    "AUTH_HEADER_PREFIX": "Bearer",
    "TOKEN_TTL": timedelta(days=7),
}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)  # whitenoise warns about a missing one before collectstatic
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}

# --- REST API -------------------------------------------------------------------
API_THROTTLE = os.environ.get("API_THROTTLE", "on").strip().lower() != "off"
# Hostile input (config/request_limits.py). The largest legitimate body, a group of 500
# members with 150-character names, is about 80 KB.
API_MAX_BODY_BYTES = env_int("API_MAX_BODY_BYTES", 256 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES
API_MAX_JSON_DEPTH = env_int("API_MAX_JSON_DEPTH", 32)
API_BODY_READ_TIMEOUT_SECONDS = float(os.environ.get("API_BODY_READ_TIMEOUT_SECONDS", "10"))

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["wallets.auth.OneQueryTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["config.request_limits.SafeJSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "config.errors.api_exception_handler",
    # Fails open (logs and allows) while the cache that holds the counters is unreachable.
    "DEFAULT_THROTTLE_CLASSES": ["config.throttling.FailOpenScopedRateThrottle"] if API_THROTTLE else [],
    "DEFAULT_THROTTLE_RATES": {
        # Per client address for the anonymous auth endpoints, per user elsewhere.
        "auth": os.environ.get("THROTTLE_AUTH_RATE", "120/min"),
        "money": os.environ.get("THROTTLE_MONEY_RATE", "300/min"),
        "claims": os.environ.get("THROTTLE_CLAIM_RATE", "300/min"),
    },
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    "DATETIME_FORMAT": "iso-8601",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Red packets API",
    "DESCRIPTION": (
        "Group red packets (lucky money): wallets on a double-entry ledger, fixed and random "
        "packets, concurrent claims and exactly-once expiry refunds. Money is integer minor "
        "units of the wallet currency. Every error has the body "
        '`{"error": {"code", "message", "fields"}}` with a stable code.'
    ),
    "VERSION": "1.0.0",
    # Relative: the host that serves this schema; Swagger UI and generated clients call it there.
    "SERVERS": [{"url": "/", "description": "This service"}],
    "LICENSE": {"name": "MIT", "url": "https://opensource.org/license/mit"},  # LICENSE at the top
    "CONTACT": {"name": "The red packets service team"},
    "TAGS": [
        {"name": "auth", "description": "Register, log in (bearer tokens), log out."},
        {"name": "wallet", "description": "The caller's own wallet: balance, payment PIN, sandbox topups, history."},
        {"name": "groups", "description": "Mirrors of chat groups: members, and the packets sent to them."},
        {"name": "packets", "description": "Send, read and claim red packets."},
        {"name": "events", "description": (
            "v1.1: every change a chat client shows, as a feed to poll and as webhooks (`x-webhooks`); "
            "each type's `data` is typed (`Event` is a oneOf by `type`)."
        )},
    ],
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's files are served by this service, not fetched from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SWAGGER_UI_SETTINGS": {"persistAuthorization": True, "displayOperationId": True},
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["config.schema.drop_trailing_slash_aliases"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums", "config.schema.finish_document", "events.schema.describe_webhooks",
    ],
    "ENUM_NAME_OVERRIDES": {
        "PacketKindEnum": "redpackets.models.PacketKind",
        "PacketStatusEnum": "redpackets.models.PacketStatus",
        "TransactionKindEnum": "wallets.models.TransactionKind",
    },
}

# --- Money rules ----------------------------------------------------------------
SANDBOX_TOPUPS = env_bool("SANDBOX_TOPUPS", True)
SANDBOX_TOPUP_MAX = env_int("SANDBOX_TOPUP_MAX", 1_000_000)
# The chat client at / offers seed_demo's users as one-tap logins (their passwords in the page).
DEMO_LOGINS = env_bool("DEMO_LOGINS", True)
DEFAULT_CURRENCY = "CNY"
# How long an Idempotency-Key replays its first response.
IDEMPOTENCY_KEY_TTL = timedelta(hours=env_int("IDEMPOTENCY_KEY_TTL_HOURS", 24))
# Payment PINs are HMAC-SHA256 under PIN_KEY (wallets/pins.py): a key the
# database does not hold, never DJANGO_SECRET_KEY. Rotate by making a new key
# current (PIN_KEY, PIN_KEY_ID) and moving the old one to PIN_RETIRED_KEYS
# ("id:key,id:key") until every PIN has been used once (rehashed) or reset.
LOCAL_ONLY_PIN_KEY = "insecure-local-only-pin-key-change-me-in-production-0123456789"
PIN_KEY = os.environ.get("PIN_KEY", LOCAL_ONLY_PIN_KEY)
PIN_KEY_ID = os.environ.get("PIN_KEY_ID", "1")
PIN_RETIRED_KEYS = dict(
    pair.strip().split(":", 1) for pair in os.environ.get("PIN_RETIRED_KEYS", "").split(",") if pair.strip()
)
PIN_KEY_DERIVED_ID = "from-secret"


def pin_key_derived_from(secret_key: str) -> str:
    """A PIN key of its own drawn from DJANGO_SECRET_KEY, for a deployment that sets no PIN_KEY."""
    import hashlib
    import hmac

    return hmac.new(secret_key.encode(), b"redpackets payment PIN key", hashlib.sha256).hexdigest()


PIN_MAX_FAILURES = 5
PIN_FAILURE_WINDOW = timedelta(minutes=15)
PIN_LOCK_DURATION = timedelta(minutes=15)

# Checks that `reconcile` runs after the ledger's own: each takes the run's scope
# (wallets.selectors.ReconciliationScope) and returns a list of problems.
RECONCILIATION_CHECKS = ["redpackets.selectors.escrow_reconcile"]
# Beat's incremental runs (what was posted since the checkpoint) and the hour (UTC) of the nightly full run.
RECONCILIATION_INCREMENTAL_SECONDS = env_int("RECONCILIATION_INCREMENTAL_SECONDS", 3600)
RECONCILIATION_FULL_HOUR = env_int("RECONCILIATION_FULL_HOUR", 4)
# A run waits this long for ledger postings in flight when it starts (docs/operations.md).
RECONCILIATION_WRITERS_WAIT_SECONDS = env_int("RECONCILIATION_WRITERS_WAIT_SECONDS", 120)

REDPACKET_TTL_SECONDS = env_int("REDPACKET_TTL_SECONDS", 86400)
REDPACKET_SWEEP_SECONDS = env_int("REDPACKET_SWEEP_SECONDS", 60)
REDPACKET_MAX_SHARE = env_int("REDPACKET_MAX_SHARE", 20000)
REDPACKET_MAX_SHARES = env_int("REDPACKET_MAX_SHARES", 100)
REDPACKET_GREETING_MAX_LENGTH = 100
# The sweep settles REDPACKET_SWEEP_BATCH packets per commit; a backlog larger than that
# is swept by REDPACKET_SWEEP_TASKS tasks at once. One by default: one sweep refunds several
# times faster than the service takes sends (docs/performance.md), and a second one at once
# takes its CPU from the claims of the same machines for little more.
REDPACKET_SWEEP_BATCH = env_int("REDPACKET_SWEEP_BATCH", 100)
REDPACKET_SWEEP_TASKS = env_int("REDPACKET_SWEEP_TASKS", 1)
# The key of the passphrases' HMACs. Without it, one derived from SECRET_KEY (which
# production requires), under its own label so neither key reveals the other.
REDPACKET_PASSPHRASE_KEY = os.environ.get("REDPACKET_PASSPHRASE_KEY", "")

# --- Events and webhooks ---------------------------------------------------------
# The groups whose events a user sees: the events app knows no groups of its own.
EVENTS_GROUPS_OF_USER = "redpackets.selectors.group_ids_of_member"
# How often beat runs the relay (feed positions, webhook fan-out and dispatch), and its batch.
EVENTS_RELAY_SECONDS = float(os.environ.get("EVENTS_RELAY_SECONDS", "1"))
EVENTS_RELAY_BATCH = env_int("EVENTS_RELAY_BATCH", 1000)
# Delays between webhook attempts; after the last one a delivery is marked failed.
WEBHOOK_RETRY_SECONDS = [
    int(s) for s in os.environ.get("WEBHOOK_RETRY_SECONDS", "5,300,1800,7200,18000,36000,36000").split(",") if s.strip()
]
WEBHOOK_TIMEOUT_SECONDS = float(os.environ.get("WEBHOOK_TIMEOUT_SECONDS", "5"))
# Loopback and private addresses, and plain http: local runs and tests only (off in production).
WEBHOOK_ALLOW_PRIVATE_URLS = env_bool("WEBHOOK_ALLOW_PRIVATE_URLS", True)
# Attempts in flight to one endpoint at most: a slow one cannot take every webhook worker.
WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT = env_int("WEBHOOK_MAX_IN_FLIGHT_PER_ENDPOINT", 2)
# An endpoint whose every attempt failed for this long is disabled (Standard Webhooks advises days).
WEBHOOK_DISABLE_AFTER_SECONDS = env_int("WEBHOOK_DISABLE_AFTER_SECONDS", 5 * 86400)

# --- Celery ---------------------------------------------------------------------
# With no broker configured, Celery uses kombu's filesystem transport under var/:
# worker and beat on one machine, no server to install.
CELERY_BROKER_URL = _broker or "filesystem://"
if CELERY_BROKER_URL == "filesystem://":
    _queue_dir = VAR_DIR / "celery-queue"
    _queue_dir.mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir),
        "data_folder_out": str(_queue_dir),
        # kombu keeps its exchange tables in ./control (relative to the working directory) unless told.
        "control_folder": str(_queue_dir / "control"),
        "polling_interval": 0.5,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = False
# Webhook deliveries have their own queue and worker (Procfile `webhooks`): a slow
# receiver never delays the expiry sweep or the relay on the default queue.
CELERY_TASK_ROUTES = {"events.tasks.deliver_to_endpoint": {"queue": "webhooks"}}
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
# Sweeping several times per REDPACKET_SWEEP_SECONDS keeps every refund inside
# that window even when a packet expires just after a sweep.
CELERY_BEAT_SCHEDULE = {
    "refund-expired-packets": {
        "task": "redpackets.tasks.refund_expired_packets",
        "kwargs": {"fan_out": True},
        "schedule": max(REDPACKET_SWEEP_SECONDS / 4, 0.5),
        "options": {"expires": max(REDPACKET_SWEEP_SECONDS / 2, 1)},
    },
    "relay-events": {
        "task": "events.tasks.relay_events",
        "schedule": EVENTS_RELAY_SECONDS,
        "options": {"expires": max(EVENTS_RELAY_SECONDS * 5, 5)},
    },
    # Backstop of the claimers' own check: a packet whose last claimer died before it recorded packet.finished.
    "finish-claimed-packets": {
        "task": "redpackets.tasks.finish_claimed_packets",
        "schedule": 5,
        "options": {"expires": 10},
    },
    "purge-idempotency-records": {
        "task": "wallets.tasks.purge_idempotency_records",
        "schedule": 3600,
        "options": {"expires": 1800},
    },
    # Incremental every hour: a broken posting is found within the hour, at the cost of
    # that hour's postings. Full once a night, at a quiet hour: what an incremental run
    # cannot see (an old row changed behind the guards, a transaction without entries,
    # a packet settled without its refund), and a fresh checkpoint (docs/operations.md).
    "reconcile-ledger-incremental": {
        "task": "wallets.tasks.reconcile_ledger",
        "kwargs": {"mode": "incremental"},
        "schedule": RECONCILIATION_INCREMENTAL_SECONDS,
        "options": {"expires": RECONCILIATION_INCREMENTAL_SECONDS / 2},
    },
    "reconcile-ledger-full": {
        "task": "wallets.tasks.reconcile_ledger",
        "kwargs": {"mode": "full"},
        "schedule": crontab(hour=RECONCILIATION_FULL_HOUR, minute=0),
        "options": {"expires": 6 * 3600},
    },
}

# --- Operating it: /healthz, /readyz, /metrics (the observability app) ------------
# Prometheus multiprocess mode: each gunicorn worker and Celery process writes its
# counters under this directory and /metrics sums them. Set here, before anything
# imports prometheus_client (config/metrics.py); config/gunicorn.py clears the files
# of processes that are gone when the web server starts.
METRICS_DIR = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(VAR_DIR / "metrics")))
METRICS_DIR.mkdir(parents=True, exist_ok=True)
# Bearer token for GET /metrics; empty: open (local run). Production requires one.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
METRICS_TOKEN_REQUIRED = False
# /readyz answers within about twice this even when Redis hangs.
READINESS_TIMEOUT_SECONDS = float(os.environ.get("READINESS_TIMEOUT_SECONDS", "0.5"))

# Logs (config/logging.py): "console" lines for a person at `make run`, "json" (the
# production default) for a log pipeline; either way with the request id on every line.
LOG_FORMAT = os.environ.get("LOG_FORMAT", "console")
LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = logging_config(fmt=LOG_FORMAT, level=LOG_LEVEL)
# Celery logs every task received, succeeded and sent by beat at INFO: the sweep alone makes
# three lines every few seconds. Failures are still logged (WARNING and up).
LOGGING["loggers"].update({
    name: {"level": os.environ.get("CELERY_TASK_LOG_LEVEL", "WARNING")}
    for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat")
})
# The access line of each request (5xx at WARNING); `make run` keeps only those on screen,
# since the chat client polls about once a second.
LOGGING["loggers"]["request"] = {"level": os.environ.get("ACCESS_LOG_LEVEL", "INFO")}
# Peers (addresses or networks, comma-separated), e.g. the load balancer, whose X-Request-ID is kept
# and whose X-Forwarded-For names the client (config/proxies.py). REQUEST_ID_TRUSTED_PROXIES is
# the variable's earlier name, still read when TRUSTED_PROXIES is not set.
TRUSTED_PROXIES = [
    ipaddress.ip_network(p.strip(), strict=False)
    for p in os.environ.get("TRUSTED_PROXIES", os.environ.get("REQUEST_ID_TRUSTED_PROXIES", "")).split(",")
    if p.strip()
]
# Errors to Sentry when SENTRY_DSN is set (config/error_reporting.py); nothing otherwise.
error_reporting_init()
# Celery logs through the same handlers instead of installing its own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
