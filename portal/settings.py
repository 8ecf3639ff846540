"""Modelport settings: one module, read from the environment, with defaults that need no server."""

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DATA_DIR = Path(env_str("MODELPORT_DATA_DIR", str(BASE_DIR / "data")))

DEBUG = env_bool("DEBUG", False)
SECRET_KEY = env_str("SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. Production (DEBUG off) refuses to start without it: "
            "set SECRET_KEY to a long random string, or set DEBUG=1 for development."
        )
    SECRET_KEY = "django-insecure-development-key-do-not-use-in-production"  # noqa: S105

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]" if DEBUG else "")
if not DEBUG and not ALLOWED_HOSTS:
    raise ImproperlyConfigured(
        "ALLOWED_HOSTS is not set. Production (DEBUG off) needs the site's host names."
    )
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "portal",
    "marketplace",
    "inference",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "portal.middleware.ApiBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"
ASGI_APPLICATION = "portal.asgi.application"

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

# --- Database ---
DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'modelport.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 600),
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server and the worker write to one SQLite file at once: WAL lets readers go on while one writes,
    # IMMEDIATE takes the write lock at BEGIN, so two writers queue instead of failing "database is locked".
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (and shared counters) ---
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "OPTIONS": {"CLIENT_CLASS": "django_redis.client.DefaultClient"},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Auth ---
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media ---
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request without it
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media")))
MEDIA_URL = "/media/"

# Uploads are streamed to temporary files from the first byte, never held whole in memory.
FILE_UPLOAD_MAX_MEMORY_SIZE = 0
FILE_UPLOAD_TEMP_DIR = env_str("FILE_UPLOAD_TEMP_DIR") or None
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 64 * 1024 * 1024)
# `python manage.py grpcserver`: the Open Inference Protocol over gRPC.
GRPC_PORT = env_int("GRPC_PORT", 8001)
GRPC_THREADS = env_int("GRPC_THREADS", 16)
MODEL_UPLOAD_MAX_BYTES = env_int("MODEL_UPLOAD_MAX_BYTES", 500 * 1024 * 1024)

# --- REST API ---
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "portal.authentication.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticatedOrReadOnly",
        "portal.authentication.HasScope",
    ],
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 20,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "rest_framework.parsers.JSONParser",
        "rest_framework.parsers.MultiPartParser",
        "rest_framework.parsers.FormParser",
    ],
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Modelport API",
    "DESCRIPTION": "Browse, upload and run machine-learning models.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- Celery ---
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "filesystem://")
BROKER_DIR = DATA_DIR / "broker"
if CELERY_BROKER_URL.startswith("filesystem://"):
    # The embedded default: messages are files in the data folder, served by a real worker process.
    for _sub in ("queue", "processed", "control"):
        (BROKER_DIR / _sub).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        "polling_interval": 0.05,
    }
CELERY_RESULT_BACKEND = None  # the database rows are the record of work, not a result backend
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = env_int("PREDICTION_SOFT_TIME_LIMIT", 30)
CELERY_TASK_TIME_LIMIT = env_int("PREDICTION_HARD_TIME_LIMIT", 35)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes the database connection around every task unless this is set.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)

# --- Logging ---
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    CSRF_COOKIE_SAMESITE = "Lax"
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

# --- marketplace ---
# How long an upload request waits for the worker's validation before answering 202 with a status URL.
MODEL_UPLOAD_WAIT_SECONDS = env_float("MODEL_UPLOAD_WAIT_SECONDS", 60)
# Limits of the child process that inspects and trial-runs an uploaded model.
MODEL_VALIDATION_MEMORY_MB = env_int("MODEL_VALIDATION_MEMORY_MB", 3072)
MODEL_VALIDATION_TIMEOUT_SECONDS = env_int("MODEL_VALIDATION_TIMEOUT_SECONDS", 60)
MODEL_VALIDATION_MAX_EXPANDED_BYTES = env_int("MODEL_VALIDATION_MAX_EXPANDED_BYTES", 4 * 1024 * 1024 * 1024)
# `?format=` filters the catalog by model file format (API.md): DRF must not read it as a renderer override.
REST_FRAMEWORK["URL_FORMAT_OVERRIDE"] = None
# NaN and ±Infinity travel as JSON literals in and out (API.md), as Python's json and tritonclient write them.
REST_FRAMEWORK["STRICT_JSON"] = False
# Catalog lists with at least this many matches cache their count for this long (counting 100k rows is slow).
MODEL_LIST_COUNT_CACHE_MIN = env_int("MODEL_LIST_COUNT_CACHE_MIN", 10_000)
MODEL_LIST_COUNT_CACHE_SECONDS = env_int("MODEL_LIST_COUNT_CACHE_SECONDS", 60)

# --- inference ---
# Jobs: time limits are CELERY_TASK_SOFT_TIME_LIMIT / CELERY_TASK_TIME_LIMIT above (PREDICTION_*_TIME_LIMIT).
PREDICTION_MAX_ATTEMPTS = env_int("PREDICTION_MAX_ATTEMPTS", 3)
PREDICTION_REAP_MARGIN = env_int("PREDICTION_REAP_MARGIN", 15)
PREDICTION_REAPER_INTERVAL = env_float("PREDICTION_REAPER_INTERVAL", 30)
PREDICTION_QUEUED_MAX_SECONDS = env_int("PREDICTION_QUEUED_MAX_SECONDS", 3600)
PREDICTION_INLINE_OUTPUT_BYTES = env_int("PREDICTION_INLINE_OUTPUT_BYTES", 256 * 1024)
PREDICTION_WAIT_DEFAULT = env_int("PREDICTION_WAIT_DEFAULT", 30)
PREDICTION_WAIT_MAX = env_int("PREDICTION_WAIT_MAX", 60)
INFERENCE_JOB_QUEUE = env_str("INFERENCE_JOB_QUEUE", "celery")
# The interactive path (Redis lists) runs when REDIS_URL is set; without it interactive calls become jobs.
INFERENCE_INTERACTIVE = env_bool("INFERENCE_INTERACTIVE", True)
INFERENCE_REDIS_PREFIX = env_str("INFERENCE_REDIS_PREFIX", "mp:infer:")
INFERENCE_SESSION_MEMORY_MB = env_int("INFERENCE_SESSION_MEMORY_MB", 1024)
INFERENCE_THREADS_PER_SESSION = env_int("INFERENCE_THREADS_PER_SESSION", 0)  # 0: cores / worker processes
INFERENCE_MODEL_CACHE_DIR = Path(env_str("INFERENCE_MODEL_CACHE_DIR", str(DATA_DIR / "model-cache")))
INFERENCE_LOOKUP_CACHE_SECONDS = env_float("INFERENCE_LOOKUP_CACHE_SECONDS", 5)
INFERENCE_MAX_BATCH = env_int("INFERENCE_MAX_BATCH", 64)  # requests per batched call of one model
# Records of interactive calls are written in bulk at most this often (seconds) by the worker.
INFERENCE_RECORD_INTERVAL = env_float("INFERENCE_RECORD_INTERVAL", 0.25)

# --- portal: API keys, plans, quotas ---
# "redis" (atomic Lua counters, shared by every process) or "sql" (conditional UPDATEs on counter rows).
QUOTA_BACKEND = env_str("QUOTA_BACKEND", "redis" if REDIS_URL else "sql")
# How long a key or a user's limits stay cached. Changes invalidate the shared Redis cache at once; the
# in-process cache (no REDIS_URL) is invalidated only in the process that made the change: keep it short.
ACCESS_CACHE_SECONDS = env_int("ACCESS_CACHE_SECONDS", 300 if REDIS_URL else 5)
# RateLimit-* headers on every API response, and 429s for quota errors outside DRF.
MIDDLEWARE += ["portal.middleware.RateLimitHeadersMiddleware"]
# SQLite cannot enforce UsageDay's one-row-per-day constraint over NULL keys; readers sum the rows, so a rare
# duplicate row from two racing writers changes no total.
SILENCED_SYSTEM_CHECKS = ["models.W047"]
