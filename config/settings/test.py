"""Fast, deterministic test settings. DATABASE_URL / CELERY_BROKER_URL still apply."""

import os

from .base import *  # noqa: F403

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tests opt in to a real worker explicitly; everything else runs in-process.
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=True)  # noqa: F405
LOGGING["root"]["level"] = "WARNING"  # noqa: F405

# Each pytest process gets its own test database, so that several runs on one machine
# (developers, CI, benchmarks) never drop each other's database mid-run.
DATABASES["default"]["TEST"] = {  # noqa: F405
    "NAME": f"test_{DATABASES['default']['NAME'].rsplit('/', 1)[-1]}_{os.getpid()}"  # noqa: F405
    if DATABASES["default"]["ENGINE"].endswith("postgresql")  # noqa: F405
    else None
}

# A run's claim waits this long for open database transactions (tests that hold one open on
# purpose would otherwise wait the default 30 s).
SETTLEMENT_CLAIM_WAIT_SECONDS = 2.0
