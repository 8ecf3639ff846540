"""Modelport settings: one module, read from the environment, with defaults that need no server."""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
import dj_email_url
from csp.constants import NONE, SELF
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
    "axes",
    "csp",
    "portal",
    "marketplace",
    "inference",
]

MIDDLEWARE = [
    # First: every request gets its id and its log line, whatever answers it.
    "portal.logs.RequestLogMiddleware",
    "portal.error_pages.SiteErrorPagesMiddleware",  # the site's 404/500 pages under DEBUG too
    "django.middleware.security.SecurityMiddleware",
    "portal.security.ContentSecurityPolicyMiddleware",  # django-csp, with a fixed policy for the APIs
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "portal.middleware.ApiBodyLimitMiddleware",
    "inference.protocols.oip_errors.V2ErrorMiddleware",
    # A view that failed on PostgreSQL, Redis or the broker being down answers 503 (portal.outages).
    "portal.middleware.DependencyOutageMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Remembers the request for the bearer-key failure counter (a context variable; nothing is read here).
    "portal.throttles.RequestContextMiddleware",
    # Turns django-axes' lock-out flag into the 429 page; axes wants it after the auth middleware.
    "axes.middleware.AxesMiddleware",
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
            "OPTIONS": {
                "CLIENT_CLASS": "django_redis.client.DefaultClient",
                # A Redis host that stopped answering fails a request in 2 s (a 503), instead of holding it.
                "SOCKET_CONNECT_TIMEOUT": 2,
                # …and one that stops answering mid-command, in 5 s (the request queue's clients do the same).
                "SOCKET_TIMEOUT": 5,
                # JSON, never a pickle: whoever can write to Redis must not run code in the web.
                "SERIALIZER": "portal.cache_serializer.JSONSerializer",
            },
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
# django-axes checks for a lock-out before any password is compared; it must come first.
AUTHENTICATION_BACKENDS = [
    "portal.security.LoginThrottleBackend",  # django-axes' AxesStandaloneBackend
    "django.contrib.auth.backends.ModelBackend",
]

# --- Login throttling (django-axes) ---
# Failed logins are recorded in the database, so a lock-out holds across web processes and restarts. It is per
# username *and* client: a stranger cannot lock a user out everywhere, and one client cannot try one account
# forever. During the lock-out even the right password is refused; it ends AXES_COOLOFF_TIME after the last
# counted failure (attempts during the lock-out do not extend it, so the page's "until" holds).
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = timedelta(minutes=env_int("LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_CLIENT_IP_CALLABLE = "portal.throttles.client_address"
AXES_LOCKOUT_CALLABLE = "portal.views.locked_out"
# Behind a reverse proxy every request comes from the proxy: the client is this many addresses from the right
# end of X-Forwarded-For (0: REMOTE_ADDR is the client; never trust the header without a proxy that sets it).
TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0)
# Sign-ups and password-reset mails per client address and hour; invalid bearer keys per client and window.
SIGNUPS_PER_HOUR = env_int("SIGNUPS_PER_HOUR", 10)
PASSWORD_RESETS_PER_HOUR = env_int("PASSWORD_RESETS_PER_HOUR", 5)
API_KEY_FAILURE_LIMIT = env_int("API_KEY_FAILURE_LIMIT", 20)
API_KEY_FAILURE_WINDOW = env_int("API_KEY_FAILURE_WINDOW", 300)

# --- Mail (password resets) ---
# EMAIL_URL: console:// (the default: mail is printed to the log), smtp://user:pass@host:587, submission://…
_email = dj_email_url.parse(env_str("EMAIL_URL", "console://"))
if "EMAIL_BACKEND" not in _email:
    raise ImproperlyConfigured(
        "EMAIL_URL has an unknown scheme: use console://, smtp://user:password@host:587 or submission://…"
    )
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email["EMAIL_HOST"] or "localhost"
EMAIL_PORT = _email["EMAIL_PORT"] or 25
EMAIL_HOST_USER = _email["EMAIL_HOST_USER"] or ""
EMAIL_HOST_PASSWORD = _email["EMAIL_HOST_PASSWORD"] or ""
# Port 587 is mail submission, which speaks STARTTLS (RFC 6409): never send the password there in the clear.
EMAIL_USE_TLS = _email["EMAIL_USE_TLS"] or (EMAIL_PORT == 587 and not _email["EMAIL_USE_SSL"])
EMAIL_USE_SSL = _email["EMAIL_USE_SSL"]
EMAIL_TIMEOUT = _email["EMAIL_TIMEOUT"] or 10
EMAIL_FILE_PATH = _email["EMAIL_FILE_PATH"] or None
DEFAULT_FROM_EMAIL = env_str(
    "DEFAULT_FROM_EMAIL", _email.get("DEFAULT_FROM_EMAIL", "Modelport <noreply@localhost>")
)
SERVER_EMAIL = env_str("SERVER_EMAIL", _email.get("SERVER_EMAIL", DEFAULT_FROM_EMAIL))
PASSWORD_RESET_TIMEOUT = env_int("PASSWORD_RESET_TIMEOUT", 3 * 24 * 3600)

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --- Static and media ---
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(BASE_DIR / "staticfiles")))
STATIC_ROOT.mkdir(parents=True, exist_ok=True)  # whitenoise warns on every request without it
# MODEL_STORAGE: where model files, tokenizers and large outputs live (read and written only by
# marketplace.files): "filesystem" under MEDIA_ROOT, or "s3", an S3-compatible bucket through django-storages,
# configured by its standard AWS_* settings. Web and workers must all use the same storage.
MODEL_STORAGE = env_str("MODEL_STORAGE", "filesystem")
if MODEL_STORAGE == "filesystem":
    _model_storage = {"BACKEND": "marketplace.files.FileSystemModelStorage"}
elif MODEL_STORAGE == "s3":
    # django-storages reads its standard settings; the keys may also come from boto3's usual sources.
    _model_storage = {"BACKEND": "marketplace.s3.S3ModelStorage"}
    AWS_STORAGE_BUCKET_NAME = env_str("AWS_STORAGE_BUCKET_NAME")
    AWS_S3_ENDPOINT_URL = env_str("AWS_S3_ENDPOINT_URL") or None
    AWS_S3_REGION_NAME = env_str("AWS_S3_REGION_NAME") or None
    AWS_S3_FILE_OVERWRITE = False
    AWS_DEFAULT_ACL = None  # private objects: every read goes through Modelport's checks or a worker
    if not AWS_STORAGE_BUCKET_NAME:
        raise ImproperlyConfigured(
            "MODEL_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME (and AWS_S3_ENDPOINT_URL…)."
        )
else:
    raise ImproperlyConfigured(f"MODEL_STORAGE is {MODEL_STORAGE!r}: use filesystem or s3.")
STORAGES = {
    "default": _model_storage,
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
WHITENOISE_USE_FINDERS = True
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media")))
MEDIA_URL = "/media/"
# Encryption at rest (marketplace/encryption.py): with MODEL_ENCRYPTION_KEY (32 bytes, base64) set, model
# files and tokenizers are stored encrypted. MODEL_ENCRYPTION_KEY_OLD is the key being replaced, during a
# rotation (`manage.py rotate_model_keys`). Checked as a process starts (marketplace/checks.py); never stored.
MODEL_ENCRYPTION_KEY = env_str("MODEL_ENCRYPTION_KEY", "")
MODEL_ENCRYPTION_KEY_OLD = env_str("MODEL_ENCRYPTION_KEY_OLD", "")

# Uploads are never held whole in memory: a model file streams straight into storage as it arrives
# (marketplace.files.ModelFileUploadHandler, on the upload views); other files go to temporary files.
FILE_UPLOAD_MAX_MEMORY_SIZE = 0
FILE_UPLOAD_TEMP_DIR = env_str("FILE_UPLOAD_TEMP_DIR") or None
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 64 * 1024 * 1024)
# `python manage.py grpcserver`: the Open Inference Protocol over gRPC.
GRPC_PORT = env_int("GRPC_PORT", 8001)
GRPC_THREADS = env_int("GRPC_THREADS", 16)
MODEL_UPLOAD_MAX_BYTES = env_int("MODEL_UPLOAD_MAX_BYTES", 500 * 1024 * 1024)

# --- REST API ---
REST_FRAMEWORK = {
    "EXCEPTION_HANDLER": "portal.outages.api_exception_handler",
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
        "portal.fastjson.JSONParser",
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
    # drf-spectacular's own enum hook, then the Open Inference Protocol's paths (plain views it cannot see).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "inference.protocols.openapi.add_open_inference_protocol",
    ],
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
# Backstops for every task; predictions have their own limit (PREDICTION_TIME_LIMIT), enforced by the runners.
CELERY_TASK_SOFT_TIME_LIMIT = env_int("CELERY_TASK_SOFT_TIME_LIMIT", 300)
CELERY_TASK_TIME_LIMIT = env_int("CELERY_TASK_TIME_LIMIT", 360)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes the database connection around every task unless this is set. A connection
# broken by a PostgreSQL restart is dropped all the same, by portal.celery's close_old_connections per task.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)

# --- Logging ---
# LOG_FORMAT=json: one JSON object per line (request and prediction lines carry their fields as keys).
LOG_FORMAT = env_str("LOG_FORMAT", "plain")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"()": "portal.logs.PlainFormatter"},
        "json": {"()": "portal.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "plain",
        }
    },
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.request": {"level": "ERROR"}},
}

# --- Metrics (Prometheus, prometheus_client's multiprocess mode) ---
# Every process of one deployment (gunicorn's workers, the Celery worker and its supervisor, the gRPC server)
# writes its metrics to files in this folder, and `/metrics` sums them. It must be the same folder for all of
# them and private to the deployment; `make run` and the test fixtures empty it when the deployment starts,
# and each process removes the files of processes that are gone when it starts. prometheus_client reads the
# variable when it is first imported, so it is set here, before any module imports it.
METRICS_DIR = Path(env_str("PROMETHEUS_MULTIPROC_DIR", str(DATA_DIR / "metrics")))
METRICS_DIR.mkdir(parents=True, exist_ok=True)
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(METRICS_DIR)
# `/metrics` needs `Authorization: Bearer $METRICS_TOKEN`; without a token, only loopback clients get it.
METRICS_TOKEN = env_str("METRICS_TOKEN")
# Series carry a model label for at most this many models per process; the rest are counted as "other".
METRICS_MODEL_LABELS_MAX = env_int("METRICS_MODEL_LABELS_MAX", 100)

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    CSRF_COOKIE_SAMESITE = "Lax"
    SECURE_CONTENT_TYPE_NOSNIFF = True
    X_FRAME_OPTIONS = "DENY"

# --- Behind TLS: HTTPS=1 ---
HTTPS = env_bool("HTTPS", False)
if HTTPS:
    SECURE_SSL_REDIRECT = True
    # Load balancers probe health over plain HTTP and do not follow redirects.
    SECURE_REDIRECT_EXEMPT = [r"^v2/health/", r"^metrics$"]
    # The TLS-terminating proxy says which scheme the client used (it must overwrite the header, not pass it).
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True

# --- Content-Security-Policy (django-csp) ---
# Every script, style, font and image is served from this site: nothing inline, nothing from elsewhere.
# `data:` images are the try-it widget's preview of a chosen file and Swagger UI's icons.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}

# --- marketplace ---
# How long an upload request waits for the worker's validation before answering 202 with a status URL.
MODEL_UPLOAD_WAIT_SECONDS = env_float("MODEL_UPLOAD_WAIT_SECONDS", 60)
# Limits of the child process that inspects and trial-runs an uploaded model.
MODEL_VALIDATION_MEMORY_MB = env_int("MODEL_VALIDATION_MEMORY_MB", 3072)
MODEL_VALIDATION_TIMEOUT_SECONDS = env_int("MODEL_VALIDATION_TIMEOUT_SECONDS", 60)
# A version still validating this long after upload lost its task (a broker restart): it is queued again.
MODEL_VALIDATION_LOST_AFTER_SECONDS = 10 * 60
# A version's tokenizer.json is parsed in the web process at upload (data for the Rust `tokenizers` library,
# not code), so its size is bounded; the largest common ones (multilingual vocabularies) are about 17 MB.
TOKENIZER_MAX_BYTES = env_int("TOKENIZER_MAX_BYTES", 32 * 1024 * 1024)
MODEL_VALIDATION_MAX_EXPANDED_BYTES = env_int("MODEL_VALIDATION_MAX_EXPANDED_BYTES", 4 * 1024 * 1024 * 1024)
# Optimization (issue 14): a quantized version whose top label agrees with the original's on less than this
# share of the measurement inputs is published, but marked and never the default for predict.
MODEL_OPTIMIZATION_MIN_AGREEMENT = env_float("MODEL_OPTIMIZATION_MIN_AGREEMENT", 0.95)
# How many inputs (the example plus generated ones) the original and the quantized model are compared on.
MODEL_OPTIMIZATION_INPUTS = env_int("MODEL_OPTIMIZATION_INPUTS", 512)
# `?format=` filters the catalog by model file format (the public API): DRF must not read it as a renderer
# override.
REST_FRAMEWORK["URL_FORMAT_OVERRIDE"] = None
# NaN and ±Infinity travel as JSON literals in and out (API.md), as Python's json and tritonclient write them.
REST_FRAMEWORK["STRICT_JSON"] = False
# Catalog lists with at least this many matches cache their count for this long (counting 100k rows is slow).
# Counting N matches reads N scattered rows (10,000 took ~60 ms at a million models), so counts from this many
# matches up are cached; the listed models themselves are never cached.
MODEL_LIST_COUNT_CACHE_MIN = env_int("MODEL_LIST_COUNT_CACHE_MIN", 1_000)
MODEL_LIST_COUNT_CACHE_SECONDS = env_int("MODEL_LIST_COUNT_CACHE_SECONDS", 60)
# Page numbers reach this many catalog rows (a deeper OFFSET gets slow): on the API the last numbered page's
# `next` goes on with a cursor; the browse page stops and says so.
MODEL_LIST_MAX_PAGED_ROWS = env_int("MODEL_LIST_MAX_PAGED_ROWS", 10_000)
MODEL_BROWSE_MAX_ROWS = env_int("MODEL_BROWSE_MAX_ROWS", 1_000)

# --- inference ---
# A prediction's own time limit (seconds), for interactive calls and jobs alike: past it the runner is killed.
PREDICTION_TIME_LIMIT = env_float("PREDICTION_TIME_LIMIT", 30)
PREDICTION_MAX_ATTEMPTS = env_int("PREDICTION_MAX_ATTEMPTS", 3)
PREDICTION_REAP_MARGIN = env_int("PREDICTION_REAP_MARGIN", 15)
PREDICTION_REAPER_INTERVAL = env_float("PREDICTION_REAPER_INTERVAL", 30)
PREDICTION_QUEUED_MAX_SECONDS = env_int("PREDICTION_QUEUED_MAX_SECONDS", 3600)
PREDICTION_INLINE_OUTPUT_BYTES = env_int("PREDICTION_INLINE_OUTPUT_BYTES", 256 * 1024)
PREDICTION_WAIT_DEFAULT = env_int("PREDICTION_WAIT_DEFAULT", 30)
PREDICTION_WAIT_MAX = env_int("PREDICTION_WAIT_MAX", 60)
# The default queue (Celery queue and worker pool): models no admin placed elsewhere are validated and run
# there.
INFERENCE_JOB_QUEUE = env_str("INFERENCE_JOB_QUEUE", "celery")
# The queues (worker pools) this worker consumes, jobs and interactive calls alike. Unset: all of them, that
# is the default queue and every queue a model is placed on (Model.queue) when the worker starts.
INFERENCE_QUEUES = env_list("INFERENCE_QUEUES")
# The Redis request queue runs when REDIS_URL is set; without it interactive calls become jobs.
INFERENCE_INTERACTIVE = env_bool("INFERENCE_INTERACTIVE", True)
INFERENCE_REDIS_PREFIX = env_str("INFERENCE_REDIS_PREFIX", "mp:infer:")
# Interactive calls for a pool a supervisor on this host serves go to it over a Unix socket, not through the
# Redis queue (`inference.runners.link`); off: every call takes the queue, as calls to another host do.
INFERENCE_LINK = env_bool("INFERENCE_LINK", True)
# Runner processes per worker (0: one per core plus one), and how many of them one model may hold at once
# (0: all but one, so another model always finds a runner).
INFERENCE_RUNNERS = env_int("INFERENCE_RUNNERS", 0)
INFERENCE_MODEL_CONCURRENCY = env_int("INFERENCE_MODEL_CONCURRENCY", 0)
# A model with more requests waiting than this is refused (503, Retry-After) until its queue drains.
INFERENCE_MODEL_QUEUE_MAX = env_int("INFERENCE_MODEL_QUEUE_MAX", 256)
# Each runner's hard memory limit, and the resident size past which it is replaced after a call.
INFERENCE_RUNNER_MEMORY_MB = env_int("INFERENCE_RUNNER_MEMORY_MB", 2048)
INFERENCE_RUNNER_RSS_BUDGET_MB = env_int(
    "INFERENCE_RUNNER_RSS_BUDGET_MB", INFERENCE_RUNNER_MEMORY_MB * 3 // 4
)
# Every process that opens an uploaded file (runners, the upload check, the optimizer) runs confined by the
# kernel (marketplace/sandbox/confine.py: bubblewrap, seccomp). `off` is for development on a host that
# refuses namespaces: such processes then run unconfined, with a warning at every start.
INFERENCE_SANDBOX = env_str("INFERENCE_SANDBOX", "on").lower() not in {"off", "0", "false", "no"}
# The unprivileged account those processes run as when the worker is root (required then: nothing runs an
# uploaded file as root). A non-root worker's children keep its uid, in a user namespace.
INFERENCE_RUNNER_USER = env_str("INFERENCE_RUNNER_USER", "")
# An uploaded tokenizer.json runs in a confined child too (marketplace/sandbox/tokenizing.py); past this many
# seconds on one call it is stopped and the caller told so (a 400).
INFERENCE_TOKENIZER_TIME_LIMIT = env_float("INFERENCE_TOKENIZER_TIME_LIMIT", 5.0)
# The largest answer the worker reads from a runner: a model that returns more fails (the runner is replaced).
INFERENCE_MAX_OUTPUT_MB = env_int("INFERENCE_MAX_OUTPUT_MB", 256)
INFERENCE_SESSION_MEMORY_MB = env_int("INFERENCE_SESSION_MEMORY_MB", 512)  # open models kept per runner
INFERENCE_THREADS_PER_RUNNER = env_int("INFERENCE_THREADS_PER_RUNNER", 0)  # 0: cores / runners
INFERENCE_MODEL_CACHE_DIR = Path(env_str("INFERENCE_MODEL_CACHE_DIR", str(DATA_DIR / "model-cache")))
# Where a worker keeps the decrypted copies of encrypted model files (MODEL_ENCRYPTION_KEY) it runs: a folder
# of this user's only, in memory (/dev/shm) by default, so no plaintext reaches a disk. Give /dev/shm room for
# the models a worker runs (docker: --shm-size), or point this at a private folder on disk.
# Past this many MB of decrypted copies, the least recently used (not in the last minute) are removed.
INFERENCE_DECRYPTED_MODEL_MAX_MB = env_int("INFERENCE_DECRYPTED_MODEL_MAX_MB", 4096)
INFERENCE_DECRYPTED_MODEL_DIR = Path(
    env_str("INFERENCE_DECRYPTED_MODEL_DIR")
    or (
        f"/dev/shm/modelport-{os.getuid()}-models"  # noqa: S108 - its owner is checked (marketplace.files)
        if os.path.isdir("/dev/shm")  # noqa: S108
        else str(INFERENCE_MODEL_CACHE_DIR / "decrypted")
    )
)
# Each process keeps the version look-ups of this many models (least recently used go first), each for this
# long: a model's change is heard at once (portal/process_cache.py), and an expired entry is served while one
# caller reloads it.
INFERENCE_LOOKUP_CACHE_SECONDS = env_float("INFERENCE_LOOKUP_CACHE_SECONDS", 5)
INFERENCE_LOOKUP_CACHE_ENTRIES = env_int("INFERENCE_LOOKUP_CACHE_ENTRIES", 4096)
INFERENCE_MAX_BATCH = env_int("INFERENCE_MAX_BATCH", 64)  # requests per batched call of one model
# Records of interactive calls are written in bulk at most this often (seconds) by the worker.
INFERENCE_RECORD_INTERVAL = env_float("INFERENCE_RECORD_INTERVAL", 0.25)

# --- webhooks (inference.webhooks) ---
# 1: webhooks may reach loopback, private and link-local addresses, over plain http too (development, tests).
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)
WEBHOOK_TIMEOUT_SECONDS = env_float("WEBHOOK_TIMEOUT_SECONDS", 5)
# Attempts per event; retry n waits WEBHOOK_RETRY_BASE_SECONDS * 2**(n-1) (5 s, 10 s, 20 s… by default).
WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 8)
WEBHOOK_RETRY_BASE_SECONDS = env_float("WEBHOOK_RETRY_BASE_SECONDS", 5)
WEBHOOK_QUEUE = env_str("WEBHOOK_QUEUE", INFERENCE_JOB_QUEUE)
# A PEM file of the certificate authorities https webhooks are verified against ("": the system's).
WEBHOOK_CA_BUNDLE = env_str("WEBHOOK_CA_BUNDLE", "")

# --- portal: API keys, plans, quotas ---
# "redis" (atomic Lua counters, shared by every process) or "sql" (conditional UPDATEs on counter rows).
QUOTA_BACKEND = env_str("QUOTA_BACKEND", "redis" if REDIS_URL else "sql")
# How long a key or a user's limits stay cached. Changes invalidate the shared Redis cache at once; the
# in-process cache (no REDIS_URL) is invalidated only in the process that made the change: keep it short.
ACCESS_CACHE_SECONDS = env_int("ACCESS_CACHE_SECONDS", 300 if REDIS_URL else 5)
# RateLimit-* headers on every response under these paths (the REST API and the Open Inference Protocol).
API_PATH_PREFIXES = ["/api/v1/", "/v2"]
# Surfaces that format a dependency outage's 503 themselves (`inference.protocols.oip_errors`).
OUTAGE_SELF_FORMATTED_PREFIXES = ["/v2"]
MIDDLEWARE += ["portal.middleware.RateLimitHeadersMiddleware"]
# A program's API requests (no cookie: `portal.wsgi`) skip what only a browser's need; the user is anonymous
# until the API's key authentication says otherwise.
API_MIDDLEWARE = [
    "portal.middleware.AnonymousUserMiddleware" if name.endswith(".AuthenticationMiddleware") else name
    for name in MIDDLEWARE
    if name
    not in {
        "whitenoise.middleware.WhiteNoiseMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "axes.middleware.AxesMiddleware",
    }
]
# The data plane's (inference.dataplane) threads: a prediction's checks, and the site's pages, which each hold
# a database connection.
DATA_PLANE_PREDICTION_THREADS = env_int("DATA_PLANE_PREDICTION_THREADS", 64)
DATA_PLANE_SITE_THREADS = env_int("DATA_PLANE_SITE_THREADS", 8)
# And the OpenAI-compatible API's (/v1), whose token streams hold theirs while a model generates.
DATA_PLANE_STREAM_THREADS = env_int("DATA_PLANE_STREAM_THREADS", 64)
# SQLite cannot enforce UsageDay's one-row-per-day constraint over NULL keys; readers sum the rows, so a rare
# duplicate row from two racing writers changes no total.
SILENCED_SYSTEM_CHECKS = ["models.W047"]
