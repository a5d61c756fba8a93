"""Partner API keys: shown once, stored hashed, revocable, scoped, last use recorded."""

import hashlib
from datetime import timedelta

import pytest
from django.utils import timezone

from coalition.errors import ErrorCode
from partners import selectors, services
from partners.models import ApiKey
from tests import factories


@pytest.fixture
def onboarded(db):
    """(partner, raw key) from the onboarding service."""
    return factories.onboarded_partner()


def test_key_looks_like_ck_live_and_only_its_digest_is_stored(onboarded):
    # Given a freshly onboarded partner and the key it was handed
    partner, raw_key = onboarded

    # Then the key is recognisable and long enough to be unguessable
    assert raw_key.startswith("ck_live_")
    assert len(raw_key) >= len("ck_live_") + 40
    # And the database holds its SHA-256 digest, never the key itself
    (row,) = ApiKey.objects.filter(partner=partner).values()
    assert row["digest"] == hashlib.sha256(raw_key.encode()).hexdigest()
    assert row["digest"] != raw_key
    assert not any(raw_key in str(value) for value in row.values())
    assert raw_key.startswith(row["prefix"]) and len(row["prefix"]) < len(raw_key) // 3


def test_authenticate_the_right_key_and_refuse_a_wrong_one(onboarded):
    partner, raw_key = onboarded

    key = selectors.api_key_authenticate(raw_key=raw_key)

    assert key is not None and key.partner == partner
    tampered = raw_key[:-1] + ("A" if raw_key[-1] != "A" else "B")
    assert selectors.api_key_authenticate(raw_key=tampered) is None
    assert selectors.api_key_authenticate(raw_key="ck_live_" + "x" * 43) is None
    assert selectors.api_key_authenticate(raw_key=raw_key.replace("ck_live_", "ck_test_")) is None
    assert selectors.api_key_authenticate(raw_key="") is None


def test_revoked_key_is_refused_from_the_next_request_on(onboarded):
    # Given a key that works
    partner, raw_key = onboarded
    key = selectors.api_key_authenticate(raw_key=raw_key)
    assert key is not None

    # When it is revoked (twice: the second changes nothing)
    services.api_key_revoke(key=key)
    revoked_at = ApiKey.objects.get(pk=key.pk).revoked_at
    services.api_key_revoke(key=ApiKey.objects.get(pk=key.pk))

    # Then the very next request with it is refused, and the revocation time stays the first
    assert selectors.api_key_authenticate(raw_key=raw_key) is None
    assert ApiKey.objects.get(pk=key.pk).revoked_at == revoked_at is not None
    # And the partner's other keys keep working
    _other, other_raw = services.api_key_create(partner=partner, name="till 2")
    assert selectors.api_key_authenticate(raw_key=other_raw).pk == _other.pk


def test_scopes_are_stored_and_unknown_scopes_refused(onboarded):
    partner, full_key = onboarded

    read_only, raw_key = services.api_key_create(partner=partner, name="reports", scopes=["read"])

    assert selectors.api_key_authenticate(raw_key=raw_key).scopes == ["read"]
    assert selectors.api_key_authenticate(raw_key=full_key).scopes == ["burn", "earn", "read"]
    for scopes in (["read", "admin"], []):
        factories.assert_refused_all(
            ErrorCode.INVALID,
            lambda scopes=scopes: services.api_key_create(partner=partner, scopes=scopes),
            field="scopes",
        )


def test_last_used_is_recorded_at_most_once_a_minute(onboarded):
    # Given a key never used
    _partner, raw_key = onboarded
    key = ApiKey.objects.get()
    assert key.last_used_at is None

    # When it is used, then used again 30 seconds after its recorded use
    selectors.api_key_authenticate(raw_key=raw_key)
    first_use = ApiKey.objects.get().last_used_at
    thirty_seconds_ago = timezone.now() - timedelta(seconds=30)
    ApiKey.objects.update(last_used_at=thirty_seconds_ago)
    selectors.api_key_authenticate(raw_key=raw_key)
    within_the_minute = ApiKey.objects.get().last_used_at

    # Then the first use is recorded and the second, within the minute, writes nothing
    assert first_use is not None and timezone.now() - first_use < timedelta(seconds=5)
    assert within_the_minute == thirty_seconds_ago

    # When it is used more than a minute after the recorded use
    two_minutes_ago = timezone.now() - timedelta(minutes=2)
    ApiKey.objects.update(last_used_at=two_minutes_ago)
    selectors.api_key_authenticate(raw_key=raw_key)

    # Then the new use is recorded
    assert ApiKey.objects.get().last_used_at > two_minutes_ago + timedelta(minutes=1)
