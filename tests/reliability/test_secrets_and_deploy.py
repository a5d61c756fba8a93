"""Secrets and deployment (issue 9): keys and tokens are stored hashed, compared in constant
time and never logged; a webhook secret is shown once; `check --deploy` is clean with the
production settings; security headers, CSRF on session forms, secure cookies."""

from __future__ import annotations

import hmac
import json
import logging
import secrets
from unittest import mock

import pytest
from django.db import connection
from django.http import HttpResponse
from django.test import Client, RequestFactory

from api.schema import schema as api_schema
from config.log_filters import RedactSecretsFilter
from config.security import SecurityHeadersMiddleware
from tests import factories
from tests.api.conftest import PASSWORD, key_for, member_with_password, staff_token_for

pytestmark = pytest.mark.django_db

ME = "{ me { memberNumber balance } }"
LOGIN = """mutation($input: MemberLoginInput!) { memberLogin(input: $input) {
  token errors { code } } }"""
REGISTER = """mutation($input: RegisterWebhookEndpointInput!) {
  registerWebhookEndpoint(input: $input) { secret endpoint { id } errors { code } } }"""


def post(client, query, variables=None, token=None):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    response = client.post(
        "/graphql/",
        json.dumps({"query": query, "variables": variables or {}}),
        content_type="application/json",
        **headers,
    )
    return response.status_code, json.loads(response.content)


# --------------------------------------------------------------------------- secrets


def test_no_secret_is_ever_logged(client, programme, staff_user, settings, caplog):
    """Every credential used, right and wrong, with SQL logging on and an internal error in
    the middle: the raw secrets appear in no log line and no traceback."""
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ALLOW_PRIVATE_HOSTS": True}
    partner, _ = factories.onboarded_partner()
    partner_key = key_for(partner)
    member = member_with_password()
    staff_token = staff_token_for(staff_user)
    wrong_key = "ck_live_" + secrets.token_urlsafe(32)
    wrong_staff = "cs_" + secrets.token_urlsafe(32)
    # What the project's handlers let through: each carries the redaction filter.
    from django.conf import settings as django_settings

    for handler in django_settings.LOGGING["handlers"].values():
        assert "redact_secrets" in handler["filters"]
    caplog.handler.addFilter(RedactSecretsFilter())
    caplog.set_level(logging.DEBUG)
    for name in ("django", "django.db.backends", "django.request", "api", "partners"):
        caplog.set_level(logging.DEBUG, logger=name)
    connection.force_debug_cursor = True  # log every SQL statement, as DEBUG would
    try:
        status, body = post(client, LOGIN, {"input": {"email": member.email, "password": PASSWORD}})
        member_token = body["data"]["memberLogin"]["token"]
        post(client, LOGIN, {"input": {"email": member.email, "password": PASSWORD + "x"}})
        post(client, ME, token=member_token)
        post(client, ME, token=member_token + "tampered")
        post(client, "{ partners { code } }", token=partner_key)
        post(client, "{ partners { code } }", token=wrong_key)
        post(client, "{ settlementRuns { totalCount } }", token=staff_token)
        post(client, "{ settlementRuns { totalCount } }", token=wrong_staff)
        _, registered = post(
            client,
            REGISTER,
            {"input": {"url": "https://hooks.example.com/x", "idempotencyKey": "k"}},
            token=partner_key,
        )
        webhook_secret = registered["data"]["registerWebhookEndpoint"]["secret"]
        with mock.patch(
            "partners.selectors.partners_list", side_effect=RuntimeError("database on fire")
        ):
            status, body = post(client, "{ partners { code } }", token=partner_key)
        assert body["errors"][0]["extensions"]["code"] == "INTERNAL_ERROR"
    finally:
        connection.force_debug_cursor = False

    logged = caplog.text + "\n".join(
        str(record.__dict__) for record in caplog.records
    )  # messages, arguments, tracebacks, extra fields
    assert "SELECT" in logged and "database on fire" in logged  # the logs were captured
    for name, secret in {
        "partner key": partner_key,
        "wrong partner key": wrong_key,
        "member token": member_token,
        "member password": PASSWORD,
        "staff token": staff_token,
        "wrong staff token": wrong_staff,
        "webhook secret": webhook_secret,
    }.items():
        assert secret not in logged, f"the {name} was logged"


def test_keys_and_tokens_are_stored_as_digests_only(programme, staff_user):
    from api.models import StaffToken
    from partners.models import ApiKey

    partner, raw_key = factories.onboarded_partner()
    raw_staff = staff_token_for(staff_user)

    for model, raw in ((ApiKey, raw_key), (StaffToken, raw_staff)):
        rows = json.dumps(list(model.objects.values()), default=str)
        assert raw not in rows
        assert raw[len(raw) // 2 :] not in rows  # nor its secret part


def test_credentials_are_compared_in_constant_time(programme, staff_user):
    from api.core.auth import staff_token_authenticate
    from partners.selectors import api_key_authenticate

    _partner, raw_key = factories.onboarded_partner()
    raw_staff = staff_token_for(staff_user)
    with mock.patch("hmac.compare_digest", wraps=hmac.compare_digest) as compare:
        assert api_key_authenticate(raw_key=raw_key) is not None
        assert staff_token_authenticate(raw_staff) is not None
    assert compare.call_count == 2


def test_a_webhook_secret_is_shown_once(client, programme, admin_client, settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "ALLOW_PRIVATE_HOSTS": True}
    partner, raw_key = factories.onboarded_partner()
    _, body = post(
        client,
        REGISTER,
        {"input": {"url": "https://hooks.example.com/x", "idempotencyKey": "k"}},
        token=raw_key,
    )
    secret = body["data"]["registerWebhookEndpoint"]["secret"]
    assert secret.startswith("whsec_")

    # No query can read it back, and the admin does not show it.
    endpoint_type = api_schema.graphql_schema.get_type("WebhookEndpoint")
    assert "secret" not in endpoint_type.fields
    from partners.models import WebhookEndpoint

    endpoint = WebhookEndpoint.objects.get()
    page = admin_client.get(f"/admin/partners/webhookendpoint/{endpoint.pk}/change/")
    assert page.status_code == 200 and secret not in page.content.decode()
    listing = admin_client.get("/admin/partners/webhookendpoint/")
    assert secret not in listing.content.decode()


# --------------------------------------------------------------------------- deployment


def _production_env(**extra) -> dict[str, str]:
    import os

    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST", "DJANGO_SETTINGS_MODULE", "DEBUG"))
    }
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "SECRET_KEY": secrets.token_urlsafe(64),
            "DATABASE_URL": "postgres://coalition@db.internal:5432/coalition",
            "CELERY_BROKER_URL": "redis://redis.internal:6379/0",
            "STRIPE_API_KEY": "sk_live_" + secrets.token_hex(12),
            "STRIPE_WEBHOOK_SECRET": "whsec_" + secrets.token_hex(12),
            "ALLOWED_HOSTS": "coalition.example.com",
            "CACHE_URL": "redis://redis.internal:6379/1",
            "STRIPE_API_BASE": "https://api.stripe.com",
        }
    )
    env.update(extra)
    return env


def test_check_deploy_is_clean_with_production_settings():
    result = factories.manage_process(
        "check", "--deploy", "--fail-level", "WARNING", env=_production_env()
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def _production_settings(code: str, **env) -> list[str]:
    result = factories.manage_process("shell", "-c", code, env=_production_env(**env))
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1].split()


@pytest.mark.parametrize("pooling", ["true", "false"])
def test_transaction_pooling_turns_off_session_state_on_every_database(pooling):
    # Behind PgBouncer in transaction pooling (docs/scaling.md): no server-side cursors on the
    # primary nor on the replica, and no prepared statements, unless asked for plainly
    code = (
        "from django.conf import settings as s; "
        "print(s.DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'], "
        "s.DATABASES['replica']['DISABLE_SERVER_SIDE_CURSORS'], "
        "s.COALITION['PREPARED_STATEMENTS'])"
    )
    seen = _production_settings(
        code,
        DATABASE_TRANSACTION_POOLING=pooling,
        REPLICA_DATABASE_URL="postgres://coalition@replica.internal:5432/coalition",
    )
    on = pooling == "true"
    assert seen == [str(on), str(on), str(not on)]


@pytest.mark.parametrize(
    "missing",
    [
        "SECRET_KEY",
        "DATABASE_URL",
        "CELERY_BROKER_URL",
        "STRIPE_WEBHOOK_SECRET",
        "ALLOWED_HOSTS",
        "CACHE_URL",
    ],
)
def test_production_refuses_to_start_without_its_secrets(missing):
    env = _production_env()
    env.pop(missing)
    result = factories.manage_process("check", env=env)
    assert result.returncode != 0
    assert missing in result.stderr


@pytest.mark.parametrize(
    "name,value",
    [
        # what .env.example shows, copied as it is
        ("SECRET_KEY", "change-me-to-50-or-more-random-characters-for-production-use-only"),
        ("STRIPE_API_KEY", "sk_live_..."),
        ("STRIPE_WEBHOOK_SECRET", "whsec_..."),
        # demo values that would run a real programme on test money or the emulator
        ("STRIPE_API_KEY", "sk_test_" + "4" * 24),
        ("STRIPE_API_BASE", "http://127.0.0.1:12111"),
        ("STRIPE_API_BASE", "http://api.stripe.com"),
        ("CACHE_URL", "locmemcache://coalition"),
    ],
)
def test_production_refuses_placeholders_and_demo_values(name, value):
    result = factories.manage_process("check", env=_production_env(**{name: value}))
    assert result.returncode != 0
    assert name in result.stderr


def test_a_staging_deployment_may_say_it_runs_on_stripes_test_keys():
    staging = _production_env(STRIPE_TEST_MODE="true", STRIPE_API_KEY="sk_test_" + "4" * 24)
    assert factories.manage_process("check", env=staging).returncode == 0


def test_production_sessions_last_a_working_day_and_connections_are_checked():
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_AGE, s.DATABASES['default']['CONN_HEALTH_CHECKS'])"
    )
    assert _production_settings(code) == [str(8 * 60 * 60), "True"]


def test_production_settings_make_cookies_secure():
    code = (
        "from django.conf import settings as s; "
        "print(s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, s.SESSION_COOKIE_HTTPONLY, "
        "s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS > 0, s.DEBUG)"
    )
    result = factories.manage_process("shell", "-c", code, env=_production_env())
    assert result.stdout.strip().splitlines()[-1].split() == [
        "True",
        "True",
        "True",
        "True",
        "True",
        "False",
    ], result.stdout + result.stderr


# --------------------------------------------------------------------------- headers, CSRF


@pytest.mark.parametrize("path", ["/portal/login/", "/admin/login/"])
def test_html_pages_carry_the_security_headers(client, path):
    response = client.get(path)

    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "object-src 'none'" in policy and "script-src 'self' 'nonce-" in policy
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]


def test_inline_scripts_of_our_templates_get_the_nonce_and_nothing_else_runs():
    request = RequestFactory().get("/finance/runs/1/")
    page = (
        b'<html><script>location.reload()</script><script src="/static/x.js"></script>'
        b"<p>&lt;script&gt;alert(1)&lt;/script&gt;</p></html>"
    )
    response = SecurityHeadersMiddleware(lambda _request: HttpResponse(page))(request)

    nonce = request.csp_nonce
    assert f'<script nonce="{nonce}">location.reload()'.encode() in response.content
    assert b'<script src="/static/x.js">' in response.content  # same origin: allowed anyway
    assert b"&lt;script&gt;alert(1)" in response.content  # escaped user text stays text
    assert f"'nonce-{nonce}'" in response["Content-Security-Policy"]


def test_the_api_is_not_given_an_html_policy(client):
    response = client.post(
        "/graphql/", json.dumps({"query": "{ partners { code } }"}), content_type="application/json"
    )
    assert "Content-Security-Policy" not in response
    assert response["X-Content-Type-Options"] == "nosniff"


def test_session_forms_need_the_csrf_token(programme, django_user_model):
    django_user_model.objects.create_user(username="clerk", password="x-Str0ng-pass", is_staff=True)
    csrf_client = Client(enforce_csrf_checks=True)

    admin_login = csrf_client.post(
        "/admin/login/", {"username": "clerk", "password": "x-Str0ng-pass"}
    )
    portal_login = csrf_client.post(
        "/portal/login/", {"email": "someone@example.com", "password": "whatever"}
    )

    assert admin_login.status_code == 403
    assert portal_login.status_code == 403


def test_a_staff_session_cannot_use_the_api_without_the_csrf_token(programme, django_user_model):
    """The session cookie is ambient: a cross-site POST must not act as the staff user."""
    django_user_model.objects.create_user(username="clerk", password="x-Str0ng-pass", is_staff=True)
    csrf_client = Client(enforce_csrf_checks=True)
    assert csrf_client.login(username="clerk", password="x-Str0ng-pass")

    response = csrf_client.post(
        "/graphql/",
        json.dumps({"query": "{ settlementRuns { totalCount } }"}),
        content_type="application/json",
    )

    body = json.loads(response.content)
    assert body["errors"][0]["extensions"]["code"] == "PERMISSION_DENIED"


# --------------------------------------------------------------------------- behind a proxy


def _address_seen(settings, *, remote: str, forwarded: str | None, trusted: int) -> str:
    from django.test import RequestFactory

    from api.core.auth import client_address

    settings.TRUSTED_PROXY_COUNT = trusted
    headers = {"REMOTE_ADDR": remote}
    if forwarded is not None:
        headers["HTTP_X_FORWARDED_FOR"] = forwarded
    return client_address(RequestFactory().get("/", **headers))


def test_rate_limits_count_the_client_the_trusted_proxy_saw(settings):
    # Without a proxy the header is the client's own writing: ignored
    assert _address_seen(settings, remote="203.0.113.9", forwarded="1.2.3.4", trusted=0) == (
        "203.0.113.9"
    )
    # Behind one proxy: the address it appended, not what the client put before it
    spoofed = "10.0.0.1, 198.51.100.7"
    assert _address_seen(settings, remote="127.0.0.1", forwarded=spoofed, trusted=1) == (
        "198.51.100.7"
    )
    # Behind two (a load balancer, then nginx): the one the outer proxy saw
    chain = "10.0.0.1, 198.51.100.7, 192.0.2.10"
    assert _address_seen(settings, remote="127.0.0.1", forwarded=chain, trusted=2) == (
        "198.51.100.7"
    )
    # A request that did not come through the proxies: its own address
    assert _address_seen(settings, remote="192.0.2.55", forwarded=None, trusted=1) == ("192.0.2.55")


@pytest.mark.django_db
def test_the_demo_is_never_seeded_against_a_real_stripe(settings):
    from django.contrib.auth import get_user_model
    from django.core.management import CommandError, call_command

    settings.STRIPE_API_BASE = "https://api.stripe.com"
    with pytest.raises(CommandError, match="local Stripe emulator only"):
        call_command("seed_demo", "--members", "5", "--days", "5")
    assert not get_user_model().objects.exists()  # no published password anywhere
