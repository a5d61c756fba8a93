"""Production: secrets are required, cookies are secure, nothing defaults to the demo."""

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import env

DEBUG = False
SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY or SECRET_KEY.startswith("insecure") or len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be set to a random value of 50+ characters")
for required in ("DATABASE_URL", "CELERY_BROKER_URL", "STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET"):
    if not env.str(required, default=""):
        raise ImproperlyConfigured(f"{required} must be set in production")

CELERY_TASK_ALWAYS_EAGER = False
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
