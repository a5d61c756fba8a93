"""Production: secrets are required, cookies are secure, nothing defaults to the demo.

Start-up refuses what would run a real programme on demo values: a missing or placeholder
secret (the ones `.env.example` shows), Stripe test keys or a Stripe address other than
Stripe's own (unless `STRIPE_TEST_MODE=true`, for a staging deployment on test keys), an
in-process cache (each worker would keep its own rate limits), no `ALLOWED_HOSTS`.
"""

import ipaddress
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import env

DEBUG = False


def _placeholder(value: str) -> bool:
    """A value copied from an example rather than generated."""
    return not value or "..." in value or "change-me" in value or value.startswith("insecure")


SECRET_KEY = env.str("SECRET_KEY", default="")
if _placeholder(SECRET_KEY) or len(SECRET_KEY) < 50:
    raise ImproperlyConfigured("SECRET_KEY must be set to a random value of 50+ characters")
for required in (
    "DATABASE_URL",
    "CELERY_BROKER_URL",
    "STRIPE_API_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "ALLOWED_HOSTS",
    "CACHE_URL",
):
    if _placeholder(env.str(required, default="")):
        raise ImproperlyConfigured(f"{required} must be set in production")
if env.str("CACHE_URL").startswith(("locmem", "dummy")):
    raise ImproperlyConfigured(
        "CACHE_URL must be a shared cache (redis://…) in production: rate limits are kept there"
    )

# Live money unless the deployment says it is a staging one, on Stripe's test keys.
STRIPE_TEST_MODE = env.bool("STRIPE_TEST_MODE", default=False)
STRIPE_API_BASE = env.str("STRIPE_API_BASE", default="https://api.stripe.com")
if not STRIPE_TEST_MODE:
    if env.str("STRIPE_API_KEY").startswith(("sk_test_", "rk_test_")):
        raise ImproperlyConfigured(
            "STRIPE_API_KEY is a test key: set a live key, or STRIPE_TEST_MODE=true for staging"
        )
    _stripe = urlsplit(STRIPE_API_BASE)
    try:
        _loopback = ipaddress.ip_address(_stripe.hostname or "").is_loopback
    except ValueError:
        _loopback = _stripe.hostname == "localhost"
    if _stripe.scheme != "https" or _loopback:
        raise ImproperlyConfigured(
            f"STRIPE_API_BASE {STRIPE_API_BASE} is not Stripe (the local emulator?): unset it, "
            "or STRIPE_TEST_MODE=true for staging"
        )

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
# Staff sessions approve and execute payouts: a working day, not Django's two weeks.
SESSION_COOKIE_AGE = env.int("SESSION_COOKIE_AGE", default=8 * 60 * 60)
