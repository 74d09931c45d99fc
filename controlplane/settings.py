"""Settings for the control plane: one module, driven by environment variables.

Embedded default (nothing set): DEBUG on, SQLite next to the code, local-memory cache,
Celery tasks run eagerly in-process. Production: set DEBUG=false, SECRET_KEY,
ALLOWED_HOSTS, DATABASE_URL (PostgreSQL) and REDIS_URL (broker, cache, rate limits).
Bad values fail loudly at start-up rather than silently falling back.
"""

import base64
from pathlib import Path

import environ
from celery.schedules import crontab
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def env_flag(name: str, default: bool) -> bool:
    """A boolean variable; anything but a clear yes/no stops start-up (django-environ
    would read a typo such as DEBUG=flase as False without a word)."""
    raw = env.str(name, default="").strip().lower()
    if not raw:
        return default
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use true or false.")


DEBUG = env_flag("DEBUG", default=True)

# A fixed development key is acceptable only with DEBUG on; production must set one.
_DEVELOPMENT_SECRET_KEY = "insecure-development-key-do-not-use-in-production"  # noqa: S105 — refused when DEBUG is off
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is off.")
    SECRET_KEY = _DEVELOPMENT_SECRET_KEY

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "simple_history",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.openid_connect",
    # Control-plane apps, lowest layer first (see DESIGN.md for the dependency order).
    "apps.audit",
    "apps.accounts",
    "apps.agents",
    "apps.approvals",
    "apps.handoffs",
    "apps.guardrails",
    "apps.knowledge",
    "apps.tools",
    "apps.runtime",
    "apps.evals",
    # Outside the stack: the demo's pretend business systems (docs/tools.md).
    "apps.sandbox",
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
    "allauth.account.middleware.AccountMiddleware",
    "simple_history.middleware.HistoryRequestMiddleware",
]

ROOT_URLCONF = "controlplane.urls"

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
                "apps.audit.context_processors.audit_navigation",
                "apps.accounts.context_processors.work_navigation",
            ],
        },
    },
]

WSGI_APPLICATION = "controlplane.wsgi.application"

# --- Data stores -------------------------------------------------------------------

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=0)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Take the write lock when a transaction starts, not at its first write: two
    # transactions that read then write would otherwise deadlock ("database is locked").
    DATABASES["default"].setdefault("OPTIONS", {})["transaction_mode"] = "IMMEDIATE"

# PostgreSQL: the hot paths (the audit chain's append, the tool gateway's read and writes)
# run as prepared statements on the driver (apps/audit/driver.py). Turn off behind a
# connection pooler in transaction mode that cannot carry prepared statements.
PREPARED_STATEMENTS = env_flag("PREPARED_STATEMENTS", default=True)

REDIS_URL = env.str("REDIS_URL", default="")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env.str("CACHE_KEY_PREFIX", default="controlplane"),
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery ---------------------------------------------------------------------------

CELERY_BROKER_URL = REDIS_URL or "memory://"
CELERY_RESULT_BACKEND = REDIS_URL or "cache+memory://"
# No broker configured: run every task in the caller, so the embedded default needs no worker.
CELERY_TASK_ALWAYS_EAGER = env_flag("CELERY_TASK_ALWAYS_EAGER", default=not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"

# --- Identity -------------------------------------------------------------------------

AUTH_USER_MODEL = "accounts.User"

AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "account_login"
LOGIN_REDIRECT_URL = "/"
ACCOUNT_LOGOUT_REDIRECT_URL = "/"

# Accounts are provisioned by administrators or by the identity provider; nobody signs
# themselves up into a governance tool.
ACCOUNT_ADAPTER = "apps.accounts.adapters.AccountAdapter"
SOCIALACCOUNT_ADAPTER = "apps.accounts.adapters.SocialAccountAdapter"
ACCOUNT_LOGIN_METHODS = {"username", "email"}
ACCOUNT_SIGNUP_FIELDS = ["email*", "username*", "password1*", "password2*"]
ACCOUNT_EMAIL_VERIFICATION = "none"
SOCIALACCOUNT_AUTO_SIGNUP = True
SOCIALACCOUNT_EMAIL_AUTHENTICATION = False
SOCIALACCOUNT_STORE_TOKENS = False
SOCIALACCOUNT_ONLY = False

# OpenID Connect: any standard provider (Okta, Entra ID, Auth0, Keycloak) from the
# environment. OIDC_GROUPS_CLAIM names the claim whose values are matched against each
# Role's IdP group names.
OIDC_SERVER_URL = env.str("OIDC_SERVER_URL", default="")
OIDC_PROVIDER_ID = env.str("OIDC_PROVIDER_ID", default="oidc")
OIDC_PROVIDER_NAME = env.str("OIDC_PROVIDER_NAME", default="Single sign-on")
OIDC_CLIENT_ID = env.str("OIDC_CLIENT_ID", default="")
OIDC_CLIENT_SECRET = env.str("OIDC_CLIENT_SECRET", default="")
OIDC_SCOPES = env.list("OIDC_SCOPES", default=["openid", "profile", "email", "groups"])
OIDC_GROUPS_CLAIM = env.str("OIDC_GROUPS_CLAIM", default="groups")
OIDC_PKCE = env_flag("OIDC_PKCE", default=True)

if OIDC_SERVER_URL and not OIDC_CLIENT_ID:
    raise ImproperlyConfigured("OIDC_SERVER_URL is set but OIDC_CLIENT_ID is not.")

SOCIALACCOUNT_PROVIDERS = {
    "openid_connect": {
        "OAUTH_PKCE_ENABLED": OIDC_PKCE,
        "APPS": (
            [
                {
                    "provider_id": OIDC_PROVIDER_ID,
                    "name": OIDC_PROVIDER_NAME,
                    "client_id": OIDC_CLIENT_ID,
                    "secret": OIDC_CLIENT_SECRET,
                    "settings": {
                        "server_url": OIDC_SERVER_URL,
                        "scope": OIDC_SCOPES,
                        "token_auth_method": env.str("OIDC_TOKEN_AUTH_METHOD", default="client_secret_basic"),
                    },
                }
            ]
            if OIDC_SERVER_URL
            else []
        ),
    }
}

# --- API ------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apps.accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_RENDERER_CLASSES": [
        "rest_framework.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Agent governance control plane API",
    "DESCRIPTION": "Govern enterprise AI agents: inventory, kill switches, and (as they land) "
    "knowledge, tools, approvals, audit and evaluation.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI served from our own static files: the docs work offline, with no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # One name per choice set that several endpoints share or whose field names collide.
    "ENUM_NAME_OVERRIDES": {
        "ChannelEnum": "apps.agents.choices.Channel",
        "AgentStatusEnum": "apps.agents.choices.AgentStatus",
        "ConnectionStatusEnum": "apps.tools.choices.ConnectionStatus",
        "ConversationStatusEnum": "apps.runtime.choices.ConversationStatus",
        "TurnStatusEnum": "apps.runtime.choices.TurnStatus",
        "ApprovalStatusEnum": "apps.approvals.choices.ApprovalStatus",
        "HandoffStatusEnum": "apps.handoffs.choices.HandoffStatus",
        "HandoffPriorityEnum": "apps.handoffs.choices.TicketPriority",
        "EvalRunStatusEnum": "apps.evals.choices.RunStatus",
        "EvalResultStatusEnum": "apps.evals.choices.ResultStatus",
        "DecisionEnum": "apps.runtime.choices.Decision",
    },
}

# --- Internationalisation, static files -----------------------------------------------

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="controlplane@localhost")

# --- Security (production) --------------------------------------------------------------

SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
SECURE_SSL_REDIRECT = env_flag("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = env_flag("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Behind a TLS-terminating proxy, trust its X-Forwarded-Proto header.
if env_flag("SECURE_PROXY_SSL_HEADER", default=False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

SILENCED_SYSTEM_CHECKS = [
    # HSTS preload is a one-way commitment for the whole domain; operators opt in with
    # SECURE_HSTS_PRELOAD=true once they own that decision.
    "security.W021",
]

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
}

# --- Control plane --------------------------------------------------------------------

# The health endpoint pings the broker with this timeout (seconds).
HEALTH_CHECK_TIMEOUT = env.float("HEALTH_CHECK_TIMEOUT", default=2.0)
SIMPLE_HISTORY_REVERT_DISABLED = True  # reverts would bypass the services and their checks

# Audit trail (docs/audit.md). The signing key signs chain checkpoints and export
# manifests; keep it apart from SECRET_KEY (rotating that must not orphan old signatures)
# and give verifiers the same key.
AUDIT_SIGNING_KEY = env.str("AUDIT_SIGNING_KEY", default="")
if not AUDIT_SIGNING_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("AUDIT_SIGNING_KEY must be set when DEBUG is off (see docs/audit.md).")
    AUDIT_SIGNING_KEY = "insecure-development-audit-key"  # development only: refused when DEBUG is off
# Where signed checkpoints of the chain head go: somewhere the database's administrators
# cannot rewrite (other storage, a WORM mount). A custom sink: AUDIT_CHECKPOINT_SINK.
AUDIT_CHECKPOINT_DIR = env.path("AUDIT_CHECKPOINT_DIR", default=BASE_DIR / "var" / "audit-checkpoints")
AUDIT_CHECKPOINT_SINK = env.str("AUDIT_CHECKPOINT_SINK", default="apps.audit.checkpoints.DirectorySink")
AUDIT_CHECKPOINT_MINUTES = env.int("AUDIT_CHECKPOINT_MINUTES", default=15)

# Knowledge. The public address of this control plane, for links in e-mails to owners.
CONTROLPLANE_BASE_URL = env.str("CONTROLPLANE_BASE_URL", default="http://127.0.0.1:8000").rstrip("/")
# How often the freshness sweep marks overdue sources stale and tells their owners.
KNOWLEDGE_SWEEP_MINUTES = env.int("KNOWLEDGE_SWEEP_MINUTES", default=60)
# "auto": PostgreSQL full-text search on PostgreSQL, the portable lexical ranking elsewhere.
KNOWLEDGE_SEARCH_BACKEND = env.str("KNOWLEDGE_SEARCH_BACKEND", default="auto")
# A passage "matches well" when it holds at least this share of the question's search terms.
KNOWLEDGE_MIN_COVERAGE = env.float("KNOWLEDGE_MIN_COVERAGE", default=0.5)

# Tools (docs/tools.md). Fernet keys for connection secrets stored encrypted: the first
# encrypts, all decrypt (rotate by putting a new key first). Keep them apart from SECRET_KEY.
CONNECTION_SECRET_KEYS = env.list("CONNECTION_SECRET_KEYS", default=[])
if not CONNECTION_SECRET_KEYS and not DEBUG:
    raise ImproperlyConfigured("CONNECTION_SECRET_KEYS must be set when DEBUG is off (see docs/tools.md).")
for _key in CONNECTION_SECRET_KEYS:
    try:
        _valid_key = len(base64.urlsafe_b64decode(_key.encode())) == 32
    except ValueError:
        _valid_key = False
    if not _valid_key:
        raise ImproperlyConfigured(
            "Each of CONNECTION_SECRET_KEYS must be a Fernet key (32 bytes, URL-safe base64); make one with "
            '`python -c "from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())"`.'
        )
# The demo's sandbox systems (orders, CRM notes, refunds) under /sandbox/: on in development.
SANDBOX_ENABLED = env_flag("SANDBOX_ENABLED", default=DEBUG)
# How long an approval request may wait before it is due (approvals refine this per tool).
APPROVAL_SLA_MINUTES = env.int("APPROVAL_SLA_MINUTES", default=60)
# After its SLA, a request may still be decided for this long; then it expires and its turn is told.
APPROVAL_GRACE_MINUTES = env.int("APPROVAL_GRACE_MINUTES", default=30)
# Approval fatigue: a tool approved more often than this, over at least this many decisions in
# the window, is suggested for a lower gate.
APPROVAL_FATIGUE_RATE = env.float("APPROVAL_FATIGUE_RATE", default=0.98)
APPROVAL_FATIGUE_MIN_SAMPLE = env.int("APPROVAL_FATIGUE_MIN_SAMPLE", default=50)
APPROVAL_FATIGUE_DAYS = env.int("APPROVAL_FATIGUE_DAYS", default=30)

# Agent turns. A worker renews a turn's lease at every step; a turn whose lease lapsed (its
# worker died) is taken over by the next delivery of its task or the recovery sweep.
TURN_LEASE_SECONDS = env.int("TURN_LEASE_SECONDS", default=120)
TURN_MAX_ATTEMPTS = env.int("TURN_MAX_ATTEMPTS", default=3)
TURN_MAX_INPUT_CHARS = env.int("TURN_MAX_INPUT_CHARS", default=8000)

CELERY_BEAT_SCHEDULE = {
    "audit-chain-pending": {"task": "audit.chain_pending", "schedule": 60.0},
    "audit-checkpoint": {"task": "audit.write_checkpoint", "schedule": AUDIT_CHECKPOINT_MINUTES * 60.0},
    "audit-verify": {"task": "audit.verify_chain", "schedule": 24 * 3600.0},
    "knowledge-freshness": {"task": "knowledge.sweep_freshness", "schedule": KNOWLEDGE_SWEEP_MINUTES * 60.0},
    "tools-interrupted-calls": {"task": "tools.close_interrupted_calls", "schedule": 300.0},
    "runtime-recover-turns": {"task": "runtime.recover_turns", "schedule": 60.0},
    "approvals-expire": {"task": "approvals.expire_overdue", "schedule": 60.0},
    "handoffs-escalate": {"task": "handoffs.escalate_overdue", "schedule": 60.0},
    # Every active weekly suite, Monday 03:00 (the Celery timezone, UTC).
    "evals-weekly": {"task": "evals.run_weekly", "schedule": crontab(minute=0, hour=3, day_of_week="mon")},
}
