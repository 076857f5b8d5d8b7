"""Settings, all from the environment (django-environ).

With nothing set this is the embedded default of the contract: SQLite, the in-memory channel
layer, the local-memory cache, Celery eager and the sandbox gateway. `DATABASE_URL` switches to
PostgreSQL (psycopg 3 with Django's connection pool) and `REDIS_URL` to the channels-redis
pub/sub layer, the Redis cache and the Redis Celery broker.
"""

import warnings
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from config.environment import BASE_DIR, DEBUG, env

# A fixed development key keeps `make run` and several `make serve` processes in agreement when
# nothing is configured; production sets SECRET_KEY (check --deploy flags this one).
SECRET_KEY = env.str(
    "SECRET_KEY", default="django-insecure-development-key-change-me-in-production-0123456789"
)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1"])
# The site's own origins (scheme, host and port) besides the one a request is made to, which
# is always its own: SITE_URL's (where the site is served, e.g. behind a proxy) and any listed
# in TRUSTED_ORIGINS (`https://app.example.com`, `https://*.example.com`). One list for Django's
# CSRF check and the WebSocket Origin rule (realtime.auth).
from config.environment import SITE_URL  # noqa: E402

TRUSTED_ORIGINS = [
    *([f"{urlsplit(SITE_URL).scheme}://{urlsplit(SITE_URL).netloc}"] if SITE_URL else []),
    *env.list("TRUSTED_ORIGINS", default=[]),
]
CSRF_TRUSTED_ORIGINS = TRUSTED_ORIGINS

DATABASE_URL = env.str("DATABASE_URL", default="")
REDIS_URL = env.str("REDIS_URL", default="")

INSTALLED_APPS = [
    "daphne",
    # django.contrib.admin with the operators' site (index grouping, attention panel).
    "portal.admin_site.OpsAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "axes",
    "common",
    "accounts",
    "realtime",
    "escrow",
    "payments",
    "disputes",
    "billing",
    "portal",
]

MIDDLEWARE = [
    # First: every response and every log record of the request carry its id.
    "common.request_id.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before WhiteNoise, so static files carry the policy too: every response does.
    "common.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "common.api.idempotency.IdempotencyMiddleware",
    # Last, as django-axes requires: turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

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

# --- Database -------------------------------------------------------------------------------
if DATABASE_URL:
    DATABASES = {"default": env.db_url_config(DATABASE_URL)}
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Under ASGI a sync view runs in a worker thread and never reuses a persistent
        # connection; the pool more than triples the request rate (docs/PERFORMANCE.md).
        DATABASES["default"]["CONN_MAX_AGE"] = 0
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": env.int("DB_POOL_MIN_SIZE", default=2),
            "max_size": env.int("DB_POOL_MAX_SIZE", default=20),
            "timeout": env.int("DB_POOL_TIMEOUT", default=10),
        }
        # Prepared statements for cursors that bind on the server: the ledger's function calls
        # (escrow.ledger._prepared_cursor); Django's own cursors never prepare. Empty turns
        # them off, e.g. behind a pooler in transaction mode that does not keep them.
        prepare_threshold = env.str("DB_PREPARE_THRESHOLD", default="5")
        DATABASES["default"]["OPTIONS"]["prepare_threshold"] = (
            int(prepare_threshold) if prepare_threshold else None
        )
        DATABASES["default"]["TEST"] = {"NAME": env.str("TEST_DATABASE_NAME", default=None)}
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": env.str("SQLITE_PATH", default=str(BASE_DIR / "db.sqlite3")),
            # Daphne's threads, eager Celery's timer threads and, under `make run`, the Celery
            # worker's processes all write; IMMEDIATE transactions plus WAL (readers never
            # block the one writer, across processes too) and a busy timeout serialise them
            # instead of failing with "database is locked".
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }
IS_POSTGRES = DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"
AUTHENTICATION_BACKENDS = [
    # First: refuses a locked-out (username, client address) before any password is checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    "accounts.backends.OperatorPermissionsBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# --- Login lockout (django-axes; accounts/README.md) -------------------------------------------
# Every login through django.contrib.auth.authenticate (portal and admin) counts failures per
# username as authentication normalises it and client address (REMOTE_ADDR); at the limit that
# pair is refused, even with the right password, until the cool-off has passed since its last
# failure. A success clears the pair's failures. API keys never pass through here.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_COOLOFF_MINUTES", default=5))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_USERNAME_CALLABLE = "accounts.lockout.login_username"
AXES_CLIENT_IP_CALLABLE = "accounts.lockout.client_address"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked_out.html"

# --- Redis: cache, channel layer, Celery ----------------------------------------------------
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", default=1000)
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "escrowpay",
            "OPTIONS": {"max_connections": REDIS_MAX_CONNECTIONS},
        }
    }
    # The pub/sub flavour: the list-based layer lost targeted messages under the bench's load
    # (docs/PERFORMANCE.md); the default pool limit fails under a burst of connects.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "max_connections": REDIS_MAX_CONNECTIONS}],
                # Redis pub/sub ignores the database number; the prefix carries it so that
                # deployments or test runs on other databases of one Redis stay apart.
                "prefix": env.str(
                    "CHANNEL_LAYER_PREFIX",
                    default=f"escrowpay.db{urlsplit(REDIS_URL).path.strip('/') or '0'}",
                ),
            },
        }
    }
    CELERY_BROKER_URL = REDIS_URL
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CELERY_BROKER_URL = "memory://"

# Without Redis, `make run` and `make serve` start a Celery worker with beat beside Daphne
# (config/serve.py) and give every process CELERY_BROKER_URL=filesystem://localhost/: kombu's
# filesystem transport in RUN_DIR (config/broker.py), so tasks, retries and the beat schedule run
# as in production. Without any broker (manage.py commands, tests) tasks run inline (eager).
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=CELERY_BROKER_URL)
RUN_DIR = Path(env.str("RUN_DIR", default=str(BASE_DIR / ".run")))
CELERY_TASK_ALWAYS_EAGER = env.bool(
    "CELERY_TASK_ALWAYS_EAGER", default=CELERY_BROKER_URL.startswith("memory://")
)
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_SOFT_TIME_LIMIT = env.int("CELERY_TASK_SOFT_TIME_LIMIT", default=60)
CELERY_TASK_TIME_LIMIT = env.int("CELERY_TASK_TIME_LIMIT", default=90)
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
if CELERY_BROKER_URL.startswith("filesystem://"):
    CELERY_BROKER_TRANSPORT = "config.broker:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(RUN_DIR / "broker" / "messages"),
        "data_folder_out": str(RUN_DIR / "broker" / "messages"),
        "control_folder": str(RUN_DIR / "broker" / "control"),
        # Seconds between looks at an empty folder: what a request-triggered task waits at most.
        "polling_interval": 0.1,
    }
    # Remote control (celery inspect) and events would be more folders to poll.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
# Celery 5.7 ignores a task's `queue=` attribute when routing; routes decide the queue.
CELERY_TASK_ROUTES = {
    "payments.webhook_process": {"queue": "webhooks"},
    "payments.webhook_process_batch": {"queue": "webhooks"},
    "payments.sandbox_deliver": {"queue": "webhooks"},
    "payments.webhooks_due": {"queue": "webhooks"},
    "realtime.webhook_delivery_attempt": {"queue": "webhooks"},
    "realtime.webhook_deliveries_enqueue_due": {"queue": "webhooks"},
}
# Periodic work; each app's tasks are bounded batches (see the tasks modules).
CELERY_BEAT_SCHEDULE = {
    "idempotency-prune": {
        "task": "common.idempotency_prune",
        "schedule": timedelta(hours=1),
    },
    # Often enough that a passed review window is acted on within a minute (CONTRACT.md); the
    # due query is one indexed range scan (milestone_review_due).
    "escrow-auto-release": {
        "task": "escrow.milestone_auto_release_due",
        "schedule": timedelta(seconds=15),
    },
    "events-publish-unpublished": {
        "task": "realtime.events_publish_unpublished",
        "schedule": timedelta(seconds=30),
    },
    "events-dispatch-undispatched": {
        "task": "realtime.events_dispatch_undispatched",
        "schedule": timedelta(seconds=60),
    },
    "events-prune-replay-index": {
        "task": "realtime.events_prune_replay_index",
        "schedule": timedelta(hours=1),
    },
    "webhook-deliveries-enqueue-due": {
        "task": "realtime.webhook_deliveries_enqueue_due",
        "schedule": timedelta(seconds=10),
    },
    "payments-work-due": {"task": "payments.work_due", "schedule": timedelta(seconds=10)},
    "payments-webhooks-due": {"task": "payments.webhooks_due", "schedule": timedelta(seconds=15)},
    "payments-settlements-sweep": {
        "task": "payments.settlements_sweep",
        "schedule": timedelta(minutes=5),
    },
    "payments-reconcile": {"task": "payments.reconcile", "schedule": timedelta(hours=1)},
    "billing-payment-due-reminders": {
        "task": "billing.payment_due_reminders_send",
        "schedule": timedelta(hours=1),
    },
    "payments-methods-expiry": {
        "task": "payments.payment_methods_expiry",
        "schedule": timedelta(hours=24),
    },
}

# --- API --------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.BearerApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_PAGINATION_CLASS": "common.api.pagination.CursorPagination",
    "PAGE_SIZE": 50,
    # common.api.exceptions.exception_handler, plus the request id in the body.
    "EXCEPTION_HANDLER": "common.request_id.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": env.str("THROTTLE_ANON", default="120/min"),
        "user": env.str("THROTTLE_USER", default="6000/min"),
    },
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Escrow payments API",
    "DESCRIPTION": "Milestone escrow for home-improvement projects. Amounts are integers in "
    "minor units; every POST accepts an Idempotency-Key header.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Names for choice sets shared by several models, so the schema has no generated names.
    "ENUM_NAME_OVERRIDES": {
        "ResultStatusEnum": "payments.models.Refund.Status",
        "NotificationKindEnum": "realtime.models.notifications.Notification.Kind",
    },
}
IDEMPOTENCY_TTL = timedelta(hours=24)
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=256 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES

# --- Domain settings: escrow, payments, realtime (config/domain_settings.py) -------------
from config.domain_settings import *  # noqa: E402, F403

# --- Static files, i18n -----------------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# `make run` and `make serve` serve static files themselves in every mode; finders mean no
# collectstatic step is needed for that.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
# Without collectstatic there is no STATIC_ROOT; the finders serve everything then.
warnings.filterwarnings("ignore", message="No directory at")
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Security ---------------------------------------------------------------------------------
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = not DEBUG and env.bool("SECURE_COOKIES", default=True)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# A form from a page opened before a logout (or another sign-in) explains itself in the site's
# layout and offers to sign in again; API paths get the JSON error body.
CSRF_FAILURE_VIEW = "common.views.csrf_failure"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SECURE_REFERRER_POLICY = "same-origin"
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# TLS terminates at the proxy in front of Daphne; these turn on with it.
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=False)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS = env.list("SILENCED_SYSTEM_CHECKS", default=[])

# --- E-mail -----------------------------------------------------------------------------------
# EMAIL_URL (django-environ's email_url): smtp+tls://user:password@host:587 (STARTTLS),
# smtp+ssl://...:465, smtp://host:25, consolemail:// (`make run`), filemail:///relative/folder
# or filemail:////absolute/folder. Without it: the console in DEBUG; otherwise no backend that
# delivers anything, so notification e-mails are marked failed with a reason instead of sent
# and `check --deploy` warns (common/checks.py, escrowpay.W005).
EMAIL_URL = env.str("EMAIL_URL", default="")
if EMAIL_URL:
    vars().update(
        {
            name: value
            for name, value in env.email_url_config(EMAIL_URL).items()
            if name.startswith("EMAIL_") and value not in (None, "")
        }
    )
else:
    EMAIL_BACKEND = (
        "django.core.mail.backends.console.EmailBackend"
        if DEBUG
        else "django.core.mail.backends.locmem.EmailBackend"
    )
# Whether a sent e-mail reaches anyone (a mailbox, the console, a folder): the local-memory
# and dummy backends keep or drop it.
EMAIL_DELIVERY_CONFIGURED = EMAIL_BACKEND not in (
    "django.core.mail.backends.locmem.EmailBackend",
    "django.core.mail.backends.dummy.EmailBackend",
)
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT_SECONDS", default=10)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="payments@escrowpay.local")

# --- Logging: one JSON object per line; secrets never reach a record --------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {
        "redact": {"()": "common.logging.RedactSecretsFilter"},
        "request_id": {"()": "common.request_id.RequestIdFilter"},
    },
    "formatters": {"json": {"()": "common.logging.JsonFormatter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "json", "filters": ["redact"]}
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Django logs a 4xx/5xx response after the middleware returned: the id from the request.
        "django.request": {"filters": ["request_id"]},
        "daphne": {"level": "WARNING"},
        # django-axes: failures and lockouts are warnings; its per-login bookkeeping is not news.
        "axes": {"level": "WARNING"},
        # A line per task run is for debugging (LOG_LEVEL=DEBUG shows them); failures are
        # logged at ERROR by Celery and by our own services.
        "celery.app.trace": {"level": "DEBUG" if LOG_LEVEL == "DEBUG" else "WARNING"},
        # kombu names the host of a filesystem:// broker URL, which has none; that is not news.
        "kombu.connection": {"level": "ERROR"},
    },
}
