"""Settings shared by every environment, read from the environment (django-environ).

Nothing set gives the embedded default: a SQLite file in the project folder and Celery tasks
run eagerly in-process. `DATABASE_URL` and `CELERY_BROKER_URL` switch to PostgreSQL and a
real Redis-backed worker.
"""

from datetime import timedelta
from pathlib import Path

import environ
from celery.schedules import crontab

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="insecure-dev-only-key-change-me")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "graphene_django",
    "coalition",
    "partners",
    "settlement",
    "charity",
    "api",
    "web",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

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

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'coalition.sqlite3'}"),
}
DATABASES["default"].setdefault("ATOMIC_REQUESTS", False)
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
# A kept connection is checked before a request uses it: after a database restart or
# failover the request gets a new connection, not a 500.
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
# Behind PgBouncer in transaction pooling mode (docs/scaling.md) a connection's session
# state does not outlive a transaction: no server-side cursors (Django's .iterator() then
# reads in one go), and the ledger's prepared statements default to off (COALITION below).
DATABASE_TRANSACTION_POOLING = env.bool("DATABASE_TRANSACTION_POOLING", default=False)
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = DATABASE_TRANSACTION_POOLING
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Demo only: wait for the writer lock instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Staff passwords (members' have their own rule, coalition.services.members).
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# How many reverse proxies in front of gunicorn append to X-Forwarded-For (0: none, the
# client is REMOTE_ADDR). Rate limits per client address count the address the nearest
# trusted proxy saw; what a client writes into the header itself is never trusted.
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

LANGUAGE_CODE = "en"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

CACHES = {
    "default": env.cache("CACHE_URL", default="locmemcache://coalition"),
}

# --- Celery ---------------------------------------------------------------------------
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="")
# No broker configured: run tasks in-process (the embedded default for trying the product).
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=not CELERY_BROKER_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=None)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_TIME_LIMIT = 15 * 60
CELERY_TASK_SOFT_TIME_LIMIT = 14 * 60
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes every database connection before and after each task unless
# this is set: every task then paid a new PostgreSQL backend (fork, authentication, empty
# catalog and plan caches, the prepared statements gone) — a 1,000-row file chunk took 152 ms
# in a worker against 117 ms in process. Workers keep their connection instead, and
# config/celery.py applies Django's own rules around each task (CONN_MAX_AGE, a connection
# found unusable is dropped), as for a web request.
CELERY_DB_REUSE_MAX = env.int("CELERY_DB_REUSE_MAX", default=1000)
CELERY_BEAT_SCHEDULE = {
    "expire-due-lots": {
        "task": "coalition.tasks.expire_due_lots",
        "schedule": crontab(hour=2, minute=15),
    },
    "recalculate-tiers": {
        "task": "coalition.tasks.recalculate_tiers",
        "schedule": crontab(hour=3, minute=0),
    },
    "birthday-bonuses": {
        "task": "partners.tasks.grant_birthday_bonuses",
        "schedule": crontab(hour=6, minute=0),
    },
    "expire-due-holds": {
        "task": "coalition.tasks.expire_due_holds",
        "schedule": timedelta(minutes=1),
    },
}

# --- Stripe ---------------------------------------------------------------------------
STRIPE_API_KEY = env.str("STRIPE_API_KEY", default="sk_test_coalition_local")
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="http://127.0.0.1:12111")
STRIPE_WEBHOOK_SECRET = env.str("STRIPE_WEBHOOK_SECRET", default="whsec_coalition_local")

# --- The programme --------------------------------------------------------------------
COALITION = {
    # Largest number of points one transaction may move.
    "MAX_POINTS_PER_TRANSACTION": env.int("COALITION_MAX_POINTS_PER_TRANSACTION", 10_000_000),
    # The expiry sweep's parallel ranges of members (PostgreSQL), one connection each.
    "EXPIRY_WORKERS": env.int("COALITION_EXPIRY_WORKERS", 2),
    # Days before points expire that the member is told by mail (coalition/notifications.py).
    "EXPIRY_NOTICE_DAYS": env.int("COALITION_EXPIRY_NOTICE_DAYS", 30),
    # The ledger's hot statements as server-side prepared statements (PostgreSQL;
    # coalition/prepared.py). Off by default behind PgBouncer in transaction pooling mode.
    "PREPARED_STATEMENTS": env.bool(
        "COALITION_PREPARED_STATEMENTS", not DATABASE_TRANSACTION_POOLING
    ),
    # Prefix of generated 16-digit member numbers (the last digit is a Luhn check digit).
    "MEMBER_NUMBER_PREFIX": env.str("COALITION_MEMBER_NUMBER_PREFIX", "6337"),
    # How long an unused redemption hold reserves points.
    "HOLD_TTL_MINUTES": env.int("COALITION_HOLD_TTL_MINUTES", 30),
    # Retries of a ledger write that lost a deadlock or serialization race.
    "WRITE_RETRIES": env.int("COALITION_WRITE_RETRIES", 5),
}

EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Coalition <no-reply@coalition.local>")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    # The Stripe library logs every request at INFO: useful when debugging, noise otherwise.
    "loggers": {"stripe": {"level": env.str("STRIPE_LOG_LEVEL", default="WARNING")}},
}

# --- Settlement -----------------------------------------------------------------------
# Lines whose net is smaller than this (absolute, in the line's currency) carry forward.
SETTLEMENT_MINIMUM = env.str("SETTLEMENT_MINIMUM", default="10.00")
SETTLEMENT_CHARITY_MINIMUM = env.str("SETTLEMENT_CHARITY_MINIMUM", default=SETTLEMENT_MINIMUM)
# How long a run's claim waits for database transactions already open when it starts (so
# that it can advance its claim floor); past it, it claims by scanning the whole history.
SETTLEMENT_CLAIM_WAIT_SECONDS = env.float("SETTLEMENT_CLAIM_WAIT_SECONDS", default=30.0)
# The Stripe API version every settlement call pins (settlement/stripe_gateway.py).
STRIPE_API_VERSION = env.str("STRIPE_API_VERSION", default="2024-06-20")
# Webhook signatures older than this many seconds are refused (replay protection).
STRIPE_WEBHOOK_TOLERANCE = env.int("STRIPE_WEBHOOK_TOLERANCE", default=300)
# Retries the Stripe library makes itself on network errors, 409, 429 and 5xx.
STRIPE_MAX_NETWORK_RETRIES = env.int("STRIPE_MAX_NETWORK_RETRIES", default=2)
STRIPE_TIMEOUT_SECONDS = env.int("STRIPE_TIMEOUT_SECONDS", default=30)
CELERY_BEAT_SCHEDULE["settlement-resume-executing"] = {
    "task": "settlement.tasks.resume_executing_runs",
    "schedule": timedelta(minutes=10),
}
CELERY_BEAT_SCHEDULE["settlement-pending-stripe-events"] = {
    "task": "settlement.tasks.process_pending_stripe_events",
    "schedule": timedelta(minutes=5),
}

# --- Charity (issue 6) ------------------------------------------------------------------
# The nightly expiry first gives opted-in members' due points to the charity they chose,
# then expires the rest (same time, same entry name).
CELERY_BEAT_SCHEDULE["expire-due-lots"]["task"] = "charity.tasks.expire_with_giving"

# --- API (GraphQL, issue 4) -----------------------------------------------------------
GRAPHENE = {"SCHEMA": "api.schema.schema"}
# Introspection and GraphiQL are on with DEBUG; in production only when enabled here.
GRAPHQL_INTROSPECTION = env.bool("GRAPHQL_INTROSPECTION", default=False)
GRAPHIQL = env.bool("GRAPHIQL", default=False)
# Lifetime of a member token from memberLogin, in seconds (a password change revokes it).
MEMBER_TOKEN_TTL = env.int("MEMBER_TOKEN_TTL", default=24 * 3600)
API_LIMITS = {
    "MAX_BODY_BYTES": env.int("API_MAX_BODY_BYTES", default=1024 * 1024),  # 413 above
    "MAX_TOKENS": 10_000,  # lexical tokens in one document
    "MAX_DEPTH": env.int("API_MAX_DEPTH", default=10),
    "MAX_COST": env.int("API_MAX_COST", default=20_000),  # fields × page sizes
    "MAX_ALIASES": 30,
    "MAX_MUTATION_FIELDS": 10,  # root fields of one mutation document
    "DEFAULT_PAGE_SIZE": 20,
    "MAX_PAGE_SIZE": 100,
    "LIST_COST": 10,
}
# Per credential (or client address) and operation, in Django's cache: set CACHE_URL to
# Redis in production so every web process counts together. "count/period", period s/m/h/d.
RATE_LIMITS = {
    "default": env.str("API_RATE_LIMIT_DEFAULT", default="3000/m"),
    "memberLogin": env.str("API_RATE_LIMIT_LOGIN", default="30/m"),
    "memberLogin:email": "20/15m",
}
# Outbound webhooks to partners (partners/webhooks.py).
WEBHOOKS = {
    "TIMEOUT": env.int("WEBHOOK_TIMEOUT", default=10),
    "RETRY_FOR_HOURS": 72,
    "ALLOW_HTTP": env.bool("WEBHOOK_ALLOW_HTTP", default=False),
    "ALLOW_PRIVATE_HOSTS": env.bool("WEBHOOK_ALLOW_PRIVATE_HOSTS", default=False),
}
CELERY_BEAT_SCHEDULE["retry-webhook-deliveries"] = {
    "task": "partners.tasks.retry_webhook_deliveries",
    "schedule": timedelta(minutes=1),
}
CELERY_BEAT_SCHEDULE["sweep-webhook-domain-events"] = {
    "task": "partners.tasks.sweep_webhook_domain_events",
    "schedule": timedelta(minutes=1),
}

# --- Reliability (issue 9) --------------------------------------------------------------
# The transactional outbox (coalition/outbox.py): follow-up work committed with the write,
# dispatched by a relay nudged after each commit and run by beat every few seconds.
OUTBOX_HANDLERS = {
    "partners.webhook_event": "partners.webhooks.outbox_event_dispatch",
}
# Tests that run real workers on a shared Redis give each its own queue (what it consumes
# and where it publishes), so no stray task reaches another worker.
CELERY_TASK_DEFAULT_QUEUE = env.str("CELERY_TASK_DEFAULT_QUEUE", default="celery")
# Publishing gives up fast when the broker is down (instead of ~6 s of retries inside a
# request): follow-up work is in the outbox, and the relay sends it once the broker is back.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "max_retries": env.int("CELERY_PUBLISH_MAX_RETRIES", default=1),
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BEAT_SCHEDULE["relay-outbox"] = {
    "task": "coalition.tasks.relay_outbox",
    "schedule": timedelta(seconds=env.int("OUTBOX_RELAY_SECONDS", default=5)),
}
CELERY_BEAT_SCHEDULE["purge-outbox"] = {
    "task": "coalition.tasks.purge_outbox",
    "schedule": crontab(hour=4, minute=30),
}
CELERY_BEAT_SCHEDULE["send-expiry-notices"] = {
    "task": "coalition.tasks.send_expiry_notices",
    "schedule": crontab(hour=7, minute=0),
}

# Security headers (config/security.py): a Content-Security-Policy with per-response nonces
# on HTML pages and a Permissions-Policy; Django's SecurityMiddleware sends nosniff,
# Referrer-Policy and COOP, XFrameOptionsMiddleware X-Frame-Options: DENY.
MIDDLEWARE.insert(
    MIDDLEWARE.index("django.middleware.security.SecurityMiddleware") + 1,
    "config.security.SecurityHeadersMiddleware",
)
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

# Credentials are cut from every log line (config/log_filters.py), SQL logged with DEBUG too.
LOGGING.setdefault("filters", {})["redact_secrets"] = {
    "()": "config.log_filters.RedactSecretsFilter"
}
for _handler in LOGGING["handlers"].values():
    _handler.setdefault("filters", []).append("redact_secrets")

# Members' personal data (coalition/services/privacy.py): what each app removes on erasure,
# and extra export sections ({name: dotted path}); rows pointing at a member are exported
# automatically.
COALITION_PRIVACY = {
    "ERASE_HOOKS": [
        "partners.privacy.member_identities_erase",
        "charity.privacy.member_giving_erase",
        "web.privacy.member_sessions_erase",
    ],
    "EXPORT_SECTIONS": {},
}

# What other apps undo when a transaction is reversed (coalition/services/reversals.py):
# "before" the reversal posts (the charity app refunds a refunded earn's round-up donation),
# "after" it (the partners app releases promotion limits and claws back referral bonuses).
COALITION_REVERSAL_HOOKS = {
    "before": ["charity.services.donations.round_up_refund_on_reversal"],
    "after": ["partners.services.earning.earn_rewards_release_on_reversal"],
}

# Read replica, opt-in (config/db_router.py): only with REPLICA_DATABASE_URL, and only reads
# wrapped in `replica_reads()`; tests run without it (the test runner mirrors it to default).
if env.str("REPLICA_DATABASE_URL", default=""):
    DATABASES["replica"] = env.db("REPLICA_DATABASE_URL")
    DATABASES["replica"]["CONN_MAX_AGE"] = DATABASES["default"]["CONN_MAX_AGE"]
    DATABASES["replica"]["TEST"] = {"MIRROR": "default"}
    # A replica reached through PgBouncer in transaction pooling needs the same (a
    # `.iterator()` under `replica_reads()` would otherwise open a named cursor).
    DATABASES["replica"]["DISABLE_SERVER_SIDE_CURSORS"] = DATABASE_TRANSACTION_POOLING
    DATABASE_ROUTERS = ["config.db_router.ReplicaRouter"]
