"""Shared fixtures. Tests marked `postgres` / `redis` need the real servers: without them
they are skipped locally and fail the run under CI=true, so CI can never pass by skipping."""

import os

import pytest
from django.conf import settings

from tests import factories

pytest_plugins = ["tests.stripe_emulator"]


def _is_postgres() -> bool:
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


def _redis_reachable() -> bool:
    url = os.environ.get("CELERY_BROKER_URL", "")
    if not url.startswith("redis://"):
        return False
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: CI must run this test, not skip it", pytrace=False)
    pytest.skip(reason)


def pytest_runtest_setup(item):
    if item.get_closest_marker("postgres") and not _is_postgres():
        _unavailable("needs PostgreSQL: set DATABASE_URL=postgres://...")
    if item.get_closest_marker("redis") and not _redis_reachable():
        _unavailable("needs Redis: set CELERY_BROKER_URL=redis://...")
    if item.get_closest_marker("pgbouncer") and not pgbouncer_binary():
        _unavailable("needs PgBouncer: apt-get install pgbouncer (.ci/run does)")


def pgbouncer_binary() -> str | None:
    """Debian installs it in /usr/sbin, which is not on every user's PATH."""
    import shutil

    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")


@pytest.fixture(autouse=True)
def _fresh_ledger_caches():
    """Each test starts with the per-process programme/account/tier caches empty (tests
    roll back or flush rows that a cache would otherwise remember)."""
    from coalition.services.posting import caches_clear

    caches_clear()
    yield
    caches_clear()


@pytest.fixture
def programme(db):
    """The programme with rules that keep tests short: no minimum redemption."""
    from coalition.services import programme_get

    programme = programme_get()
    programme.min_redemption_points = 1
    programme.save()
    return programme


@pytest.fixture
def partner(db):
    return factories.PartnerFactory()


@pytest.fixture
def other_partner(db):
    return factories.PartnerFactory()


@pytest.fixture
def member(db, programme):
    return factories.member()


@pytest.fixture
def charity(db):
    return factories.CharityFactory()


@pytest.fixture(autouse=True)
def _fresh_rate_limits():
    """Every test starts with no request counted against the rate limits (the API's and
    the portal login's share the cache, and every test client is 127.0.0.1)."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def tiers(db):
    """Three tiers: Base from 0 qualifying points, Silver from 1,000, Gold from 5,000."""
    from coalition.models import Tier

    return {
        "base": Tier.objects.create(code="base", name="Base", qualifying_points=0),
        "silver": Tier.objects.create(code="silver", name="Silver", qualifying_points=1000),
        "gold": Tier.objects.create(code="gold", name="Gold", qualifying_points=5000),
    }


@pytest.fixture
def staff_user(db):
    return factories.finance_staff("finance")


def pytest_sessionstart(session):
    """Drop test databases left behind by earlier runs that were killed (their process is
    gone), so crashed runs don't pile databases up on a shared server."""
    if not _is_postgres() or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    import psycopg2

    params = settings.DATABASES["default"]
    prefix = f"test_{params['NAME']}_"
    try:
        conn = psycopg2.connect(
            dbname="postgres",
            user=params.get("USER") or None,
            password=params.get("PASSWORD") or None,
            host=params.get("HOST") or None,
            port=params.get("PORT") or None,
        )
    except psycopg2.Error:
        return  # the run itself will report an unreachable server
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", [prefix + "%"])
        for (name,) in cursor.fetchall():
            pid = name[len(prefix) :]
            if not pid.isdigit() or _process_alive(int(pid)):
                continue
            try:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}"')
            except psycopg2.Error:
                pass  # in use by another run on another machine: leave it
    conn.close()


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
