"""Fast, deterministic test settings. DATABASE_URL / CELERY_BROKER_URL still apply."""

from .base import *  # noqa: F403

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tests opt in to a real worker explicitly; everything else runs in-process.
CELERY_TASK_ALWAYS_EAGER = True
LOGGING["root"]["level"] = "WARNING"  # noqa: F405
